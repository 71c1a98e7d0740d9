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

// A binary built here from source (`npm install` in a clone) sits beside the package, and `files`
// takes it so that installing from git (`npm install git+…`, which builds it in `prepare`) ships
// it. A published package must not: binding.js tries it before the platform package, so on this
// platform it would be loaded in place of the portable build, and elsewhere it is dead weight.
const root = path.join(__dirname, '..')
const local = fs.readdirSync(root).filter((name) => /^native-pubsub\..+\.node$/.test(name))
if (local.length > 0) {
  console.error(`${local.join(', ')}: a build from source, which must not be published: delete it (the platform packages in npm/ carry the binaries)`)
  process.exit(1)
}

// A Linux binary built for this machine's own glibc 2.36+ uses packed relocations (build.rs) and
// would not load on an older glibc (Ubuntu 22.04, Amazon Linux 2023, RHEL 9): the prebuilt ones
// must be built with NATIVE_PUBSUB_PORTABLE=1.
const npmDir = path.join(root, 'npm')
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
