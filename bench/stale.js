'use strict'
// Whether a build output is missing or older than any of its sources (files or folders).
const fs = require('node:fs')
const path = require('node:path')

function newestMtime(paths) {
  let newest = 0
  for (const file of paths) {
    if (!fs.existsSync(file)) continue
    const stat = fs.statSync(file)
    if (stat.isDirectory()) newest = Math.max(newest, newestMtime(fs.readdirSync(file).map((f) => path.join(file, f))))
    else newest = Math.max(newest, stat.mtimeMs)
  }
  return newest
}

function isStale(output, sources) {
  return !fs.existsSync(output) || fs.statSync(output).mtimeMs < newestMtime(sources)
}

module.exports = { isStale }
