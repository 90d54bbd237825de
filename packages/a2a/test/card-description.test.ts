// The card's `description` is REQUIRED (a2a.proto `AgentCard.description`),
// and §5.7 reads REQUIRED as "present and set": for a proto3 string the empty
// string is the unset value (the official a2a-sdk's validator flags it). A
// server given an empty one still publishes a valid card.
import { describe, expect, it } from 'vitest';
import { LocalPolicyEnforcer } from '@weave/authz';
import { SpiffeId } from '@weave/identity';
import { A2AServer } from '../src/index.js';

const selfId = SpiffeId.parse('spiffe://weave.test/agent/described');
const enforcer = LocalPolicyEnforcer.fromObject({ version: 1, id: 'none', default: 'deny', rules: [] });

/** The public and extended cards of a server made with this description. */
async function cards(description: string) {
  const a2a = new A2AServer({
    card: { name: 'Recipe Agent', description, version: '1.0.0' },
    selfId,
    enforcer,
    extendedCard: () => undefined,
  });
  a2a.registerTaskHandler('cook', () => 'done');
  try {
    return [a2a.agentCard('https://agent.test/'), a2a.extendedAgentCard('https://agent.test/')];
  } finally {
    await a2a.close();
  }
}

describe('the card description', () => {
  it('is published as the agent’s name when the options give an empty one', async () => {
    for (const card of await cards('')) expect(card.description).toBe('Recipe Agent');
  });

  it('is published as given otherwise', async () => {
    for (const card of await cards('Helps with recipes.'))
      expect(card.description).toBe('Helps with recipes.');
  });
});
