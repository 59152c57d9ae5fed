/**
 * Placeholder for the IP→TCP upgrade service, which branch `l3tcp` builds (the TUN device in the
 * upgrade namespace, the NAT, accepted sockets into the stream runner). Until it lands,
 * starting it fails with `OXY_ERR_TCP_UPGRADE_UNAVAILABLE`, and the IP pipeline refuses TCP
 * flows (a RST, counted) instead of upgrading them. The real file replaces this one whole.
 */
import { OXY_ERR, OxyError } from '../../errors.ts';
import type { Runtime } from '../../runtime.ts';
import type { TcpUpgrade } from './port.ts';

/** Starts the process's IP→TCP upgrade service; here it always rejects (see the module comment). */
export function startTcpUpgrade(_rt: Runtime): Promise<TcpUpgrade> {
  return Promise.reject(
    new OxyError(OXY_ERR.TCP_UPGRADE_UNAVAILABLE, 'IP→TCP upgrade not built', { source: 'internal' }),
  );
}
