'use strict'
// `npm publish` runs this first (prepublishOnly). The package itself carries no native addon: each
// platform's binary is in its own package (npm/<platform>, native-pubsub-<platform>), which npm
// installs as an optional dependency. `napi pre-publish` publishes those packages and writes them
// into package.json's optionalDependencies before npm packs this one; it refuses if any of them
// lacks its binary (copy each platform's build into npm/<platform>/ first, e.g. with
// `napi artifacts`). Without this step the published package could not load anywhere.
// `npm publish --dry-run` only checks: nothing is published and package.json is left alone.
const { spawnSync } = require('node:child_process')

const args = ['pre-publish', '-t', 'npm', '--no-gh-release']
if (process.env.npm_config_dry_run === 'true') args.push('--dry-run')
console.log(`napi ${args.join(' ')}`)
const result = spawnSync('napi', args, { stdio: 'inherit', shell: process.platform === 'win32' })
if (result.error) throw result.error
process.exitCode = result.status ?? 1
