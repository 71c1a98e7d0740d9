const { startMosquitto } = require('./__test__/helpers/mosquitto.js')
const { PubSub } = require('./mqtt.js')
const crypto = require('crypto')
;(async () => {
  const b = await startMosquitto()
  for (const [name, url] of [['tcp', b.tcpUrl], ['ws', b.wsUrl], ['ws', b.wsUrl], ['tcp', b.tcpUrl]]) {
    const s = new PubSub({ endpoint: url }), p = new PubSub({ endpoint: url })
    let got
    const done = new Promise(r => got = r)
    const sub = s.subscribe('big', { format: 'binary', qos: 1 }).subscribe(m => got(m))
    await sub.ready
    const t0 = Date.now()
    const big = crypto.randomBytes(256 * 1024)
    await p.publish('big', big, { qos: 1 })
    const t1 = Date.now()
    const m = await done
    console.log(name, 'publish', t1 - t0, 'receive', Date.now() - t0, m.equals(big))
    await s.close(); await p.close()
  }
  await b.stop()
})()
