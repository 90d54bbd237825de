import { request, type Dispatcher } from 'undici';
import { A2AClientError } from './errors.js';
import type { StreamResponse, TaskPushNotificationConfig } from './wire/v1.js';

/** Options of {@link createWebhookSender}. */
export interface WebhookSenderOptions {
  /** The transport to the webhooks, e.g. a `@weave/transport` SecureChannel. Required. */
  readonly dispatcher: Dispatcher;
  /** Per-notification timeout in ms. Default 5000. */
  readonly timeoutMs?: number;
  /** Header carrying `config.token` when no `authentication` is set. Default `X-A2A-Notification-Token` (as the official SDK). */
  readonly tokenHeader?: string;
}

/**
 * A push-notification sender that POSTs each event (a v1.0 StreamResponse,
 * `application/a2a+json`) to the config's URL over `dispatcher`, with
 * `Authorization: <scheme> <credentials>` when the config has
 * authentication, else the token header. A non-2xx answer is an error.
 */
export function createWebhookSender(
  options: WebhookSenderOptions,
): (config: TaskPushNotificationConfig, event: StreamResponse) => Promise<void> {
  if (!options?.dispatcher) throw new TypeError('createWebhookSender: dispatcher is required');
  const timeout = options.timeoutMs ?? 5000;
  const tokenHeader = options.tokenHeader ?? 'X-A2A-Notification-Token';
  return async (config, event) => {
    const headers: Record<string, string> = { 'content-type': 'application/a2a+json' };
    if (config.authentication?.credentials) {
      headers.authorization = `${config.authentication.scheme} ${config.authentication.credentials}`;
    } else if (config.token) {
      headers[tokenHeader] = config.token;
    }
    const res = await request(config.url, {
      method: 'POST',
      dispatcher: options.dispatcher,
      headers,
      body: JSON.stringify(event),
      headersTimeout: timeout,
      bodyTimeout: timeout,
    });
    await res.body.dump();
    if (res.statusCode < 200 || res.statusCode >= 300) {
      throw new A2AClientError('PUSH_REJECTED', `webhook ${config.url} answered HTTP ${res.statusCode}`);
    }
  };
}
