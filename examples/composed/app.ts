/**
 * Two apps written on their own, run as one: the pre-shared-key egress control
 * (examples/psk-egress) and the Proxy-Status next hop (examples/proxy-status), unchanged.
 * Both keep state in the ingress connection's `ext`; each sees only its own. The PSK app comes
 * first, so its blocks are decided before the Proxy-Status app is asked anything, and both see
 * every event (docs/apps.md, "Composition").
 */
import { composeApps } from 'oxy';
import { app as proxyStatus } from '../proxy-status/app.ts';
import { app as pskEgress } from '../psk-egress/app.ts';

export const app = composeApps(
  {
    name: 'composed',
    version: '0.1.0',
    description: 'Forward proxy with pre-shared-key egress control and Proxy-Status next hops',
  },
  pskEgress,
  proxyStatus,
);
