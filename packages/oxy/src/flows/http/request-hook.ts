/**
 * The `HttpRequestHook.handleRequest` step of an absolute-form request, shared by forwarding
 * and `Upgrade`: build the head the hook may rewrite, run the hook, record its decision, and
 * work out where a rewritten authority now points. Callers run it only when the app has the
 * hook (`rt.hooks.request !== null`), so an app without it pays nothing.
 */
import type { SocketAddr } from '../../context/contexts.ts';
import type { RequestState } from '../../context/state.ts';
import type { HttpHeaders, RequestDecision, RequestHead } from '../../hooks/http-request.ts';
import type { Runtime } from '../../runtime.ts';
import { type AbsoluteTarget, parseAuthority } from './headers.ts';

/** What the hook decided, with the head as the hook left it. */
export interface RequestHookOutcome {
  readonly head: RequestHead;
  /** `forward`, `respond` or `block`; a hook returning nothing counts as `forward`. */
  readonly decision: RequestDecision;
  /** Where to connect: the target's address, or the authority the hook rewrote. */
  readonly addr: SocketAddr;
}

const FORWARD: RequestDecision = Object.freeze({ kind: 'forward' });

/**
 * Runs `handleRequest` for `request`. Throws the hook-failure error (answered 500) when the hook
 * throws or leaves an authority that does not parse.
 */
export async function runRequestHook(
  rt: Runtime,
  hook: NonNullable<Runtime['hooks']['request']>,
  request: RequestState,
  target: AbsoluteTarget,
  headers: HttpHeaders,
): Promise<RequestHookOutcome> {
  const head: RequestHead = {
    method: request.method,
    scheme: target.scheme,
    authority: target.authority,
    path: target.path,
    headers,
  };
  let decision: RequestDecision;
  try {
    decision = (await hook(head, request)) ?? FORWARD;
  } catch (e) {
    throw rt.hookFailed('HttpRequestHook.handleRequest', e);
  }
  request.decisions.push(`request:${decision.kind}`);
  let addr = target.addr;
  if (decision.kind === 'forward' && head.authority !== target.authority) {
    const parsed = parseAuthority(head.authority, target.scheme === 'https' ? 443 : 80);
    if (parsed === null) throw rt.hookFailed('HttpRequestHook.handleRequest', new Error('invalid authority'));
    addr = parsed;
  }
  return { head, decision, addr };
}
