/**
 * Foundations restarts: graceful restarts that pass both listening sockets and app state
 * to the new process and report the outcome to whoever asked; systemd socket activation
 * and `sd_notify`; draining on restart and on SIGTERM/SIGINT; a task tracker.
 * See docs/restarts.md for the sequence, the protocol and the exit codes.
 */

export { type ActiveDatagram, type DatagramAddr, DatagramListeners } from './datagrams.ts';
export {
  decodeBody,
  encodeFrame,
  FrameDecoder,
  type HandoverMessage,
  MAX_CONTROL_FRAME,
  MAX_STATE_FRAME,
  type RestarterMessage,
} from './frames.ts';
export { HandoverChannel } from './handover.ts';
export { httpDrain } from './http-drain.ts';
export {
  decodeProcAddr,
  HANDOVER_ENV,
  type Handover,
  type InheritedDatagram,
  type InheritedSocket,
  parseHandoverEnv,
  parseSystemdEnv,
  type SocketOfFd,
  sameListenAddr,
  scrubInheritanceEnv,
  socketAddressOfFd,
  socketOfFd,
  type Unclaimed,
} from './inherited.ts';
export {
  type DrainReason,
  Lifecycle,
  type LifecycleLog,
  type LifecycleOptions,
  type LifecyclePhase,
  RESTART_SOCKET_NAME,
  type RestartOutcome,
  startLifecycle,
} from './lifecycle.ts';
export {
  type ActiveListener,
  type ForeignListener,
  Listeners,
  type ListenOptions,
  serverFd,
  unixSocketLive,
} from './listeners.ts';
export {
  bindOptionsFit,
  bindOptionsOf,
  type DatagramBindOptions,
  fitsByAddress,
  fitsByName,
  type SocketTransport,
} from './matching.ts';
export { type ProcessInheritance, processInheritance, processListeners } from './process-inheritance.ts';
export { RESTARTER_EXIT, type RestarterOptions, runRestarter } from './restarter.ts';
export { formatNotifyState, type NotifyOutcome, type NotifyState, sdNotify } from './sd-notify.ts';
export { RestartSettings, restartSettings } from './settings.ts';
export {
  checkRestartSocketOwner,
  defaultRestartSocket,
  type InstanceIdentity,
  resolveRestartSocket,
  restartSocketDir,
  restartSocketName,
  type SocketPathEnv,
  withResolvedRestartSocket,
} from './socket-path.ts';
export { type NextOutcome, type NextProcessOptions, startNextProcess } from './spawn-next.ts';
export { type TaskToken, TaskTracker, type WaitOutcome } from './task-tracker.ts';
