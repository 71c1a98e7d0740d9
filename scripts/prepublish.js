'use strict'
// `npm publish` runs this first (prepublishOnly). The package itself carries no native addon: each
// platform's binary is in its own package (npm/<platform>, native-pubsub-<platform>), which npm
// installs as an optional dependency. `napi pre-publish` publishes those packages and writes them
// into package.json's optionalDependencies before npm packs this one; it refuses if any of them
// lacks its binary (copy each platform's build into npm/<platform>/ first, e.g. with
// `napi artifacts`). Without this step the published package could not load anywhere.
// `npm publish --dry-run` only checks: nothing is published and package.json is left alone.
const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')

// A Linux binary built for this machine's own glibc 2.36+ uses packed relocations (build.rs) and
// would not load on an older glibc (Ubuntu 22.04, Amazon Linux 2023, RHEL 9): the prebuilt ones
// must be built with NATIVE_PUBSUB_PORTABLE=1.
const npmDir = path.join(__dirname, '..', 'npm')
for (const platform of fs.readdirSync(npmDir).filter((name) => name.startsWith('linux-') && name.endsWith('-gnu'))) {
  for (const file of fs.readdirSync(path.join(npmDir, platform)).filter((name) => name.endsWith('.node'))) {
    if (fs.readFileSync(path.join(npmDir, platform, file)).includes('GLIBC_ABI_DT_RELR')) {
      console.error(`npm/${platform}/${file} needs glibc 2.36 (packed relocations): build it with NATIVE_PUBSUB_PORTABLE=1`)
      process.exit(1)
    }
  }
}

const args = ['pre-publish', '-t', 'npm', '--no-gh-release']
if (process.env.npm_config_dry_run === 'true') args.push('--dry-run')
console.log(`napi ${args.join(' ')}`)
const result = spawnSync('napi', args, { stdio: 'inherit', shell: process.platform === 'win32' })
if (result.error) throw result.error
process.exitCode = result.status ?? 1
