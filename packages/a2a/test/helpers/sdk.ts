// Building requests for the official @a2a-js/sdk client (ts-proto shapes: `$case` oneofs).
import { Role, type Message as SdkMessage, type SendMessageRequest } from '@a2a-js/sdk';

/** A user text message as the SDK types it. */
export function sdkText(text: string, extra: Partial<SdkMessage> = {}): SdkMessage {
  return {
    messageId: `m-${Math.random().toString(36).slice(2)}`,
    contextId: '',
    taskId: '',
    role: Role.ROLE_USER,
    parts: [{ content: { $case: 'text', value: text }, metadata: undefined, filename: '', mediaType: '' }],
    metadata: undefined,
    extensions: [],
    referenceTaskIds: [],
    ...extra,
  };
}

export function sdkSendParams(message: SdkMessage): SendMessageRequest {
  return { tenant: '', message, configuration: undefined, metadata: undefined };
}

export function kind(e: object): string {
  return Object.keys(e).find((k) => k !== 'eventId') ?? '';
}
