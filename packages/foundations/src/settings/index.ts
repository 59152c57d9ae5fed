/**
 * Foundations settings: schemas where every field has a description and a default, loaded from
 * YAML files merged over those defaults, with errors that name the key path and the file, and
 * generated as an annotated YAML config and a JSON Schema. See docs/foundations.md.
 */
export {
  checkSettings,
  foundationsChecks,
  type SettingsProblem,
  unreadableFile,
  unwritableFile,
} from './checks.ts';
export { type GenerateYamlOptions, generateYaml, toJsonSchema, uncommentedYamlKeys } from './generate.ts';
export {
  defaultSettings,
  formatIssue,
  formatPath,
  loadSettings,
  mergeSources,
  parseSettings,
  readYamlFile,
  SettingsError,
  type SettingsIssue,
  type SettingsSource,
  settingOrigin,
} from './load.ts';
export {
  formatListenAddr,
  formatSocketAddr,
  type ListenAddr,
  type ParseFailure,
  parseCidr,
  parseListenAddr,
  parseSocketAddr,
  parseTargetAddr,
  type SocketAddr,
} from './net.ts';
export { type Infer, type SettingsNode, s, settingsNode, variantSchema } from './schema.ts';
export { formatDuration, formatSize, MAX_TIMER_MS, parseDuration, parseSize } from './units.ts';
