import { WeaveError } from '@weave/identity';

/** One problem found in a policy document, located by line (when known) and key path. */
export interface PolicyIssue {
  /** 1-based line in the source text; absent for policies built from objects. */
  readonly line?: number;
  /** 1-based column in the source text. */
  readonly col?: number;
  /** Key path in the document, e.g. `rules[2].callers[0]`. */
  readonly path: string;
  readonly message: string;
}

/**
 * A policy document (file, string or object) is invalid. `issues` lists every
 * problem; the message shows them one per line as `line 7, rules[2].callers[0]: …`.
 */
export class PolicyError extends WeaveError {
  /** Where the policy came from (file path, or `<object>`). */
  readonly source: string;
  readonly issues: readonly PolicyIssue[];

  constructor(source: string, issues: readonly PolicyIssue[], options?: { cause?: unknown; code?: string }) {
    const lines = issues.map((i) => `  ${formatIssue(i)}`).join('\n');
    super(
      options?.code ?? 'POLICY_INVALID',
      `invalid policy ${source}: ${issues.length} problem${issues.length === 1 ? '' : 's'}\n${lines}`,
      options,
    );
    this.source = source;
    this.issues = Object.freeze([...issues]);
  }
}

/** `line 7, rules[2].callers[0]: message` (parts that are unknown are left out). */
function formatIssue(issue: PolicyIssue): string {
  const where: string[] = [];
  if (issue.line !== undefined) where.push(`line ${issue.line}`);
  if (issue.path !== '') where.push(issue.path);
  return where.length > 0 ? `${where.join(', ')}: ${issue.message}` : issue.message;
}

/** An enforcer was configured wrongly (bad OPA URL, allow-all in production …). */
export class AuthzConfigError extends WeaveError {}
