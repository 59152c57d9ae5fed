/**
 * Entry point of the `oxy` command: the default Oxy app. Placeholder until the core proxy lands.
 */
console.log('oxy: starting');
