/**
 * Foundations security: syscall sandboxing with seccomp. Allow lists are composable values,
 * the violation action is a small union, and `applySandboxFromSettings` wires it to
 * `security.syscall_sandboxing`. See docs/security.md.
 */
export {
  enableSyscallSandboxing,
  ioUringInstances,
  restartWithoutIoUring,
  type SandboxReport,
  unknownSyscallNames,
  ViolationAction,
} from './sandbox.ts';
export {
  applySandboxFromSettings,
  DEFAULT_SERVICE_LISTS,
  denyIoUringFromSettings,
  SecuritySettings,
  SyscallSandboxingSettings,
  violationActionFromSettings,
} from './settings.ts';
export {
  ASYNC,
  allowList,
  CHILD_PROCESS,
  DNS,
  FS_READ,
  FS_WRITE,
  NET_SOCKET_API,
  NODE_SERVICE,
  SERVICE_BASICS,
  type SyscallAllowList,
} from './syscall-lists.ts';
