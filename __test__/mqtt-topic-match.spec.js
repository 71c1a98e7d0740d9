'use strict'
// mqttTopicMatch(filter, topic): whether a topic name matches a subscription filter, following
// MQTT 3.1.1 section 4.7 (the same helper Amplify exports).
const test = require('ava')
const { mqttTopicMatch } = require('../mqtt.js')

const truthTable = test.macro({
  exec(t, filter, topic, expected) {
    t.is(mqttTopicMatch(filter, topic), expected)
  },
  title(providedTitle, filter, topic, expected) {
    return `${providedTitle}: '${filter}' ${expected ? 'matches' : 'does not match'} '${topic}'`
  },
})

test('mqttTopicMatch is exported as a function', (t) => {
  t.is(typeof mqttTopicMatch, 'function')
})

// Exact filters: every level must be equal, and the number of levels too.
test('exact filter', truthTable, 'a/b', 'a/b', true)
test('exact filter', truthTable, 'a/b', 'a/c', false)
test('exact filter', truthTable, 'a/b', 'a/b/c', false)
test('exact filter', truthTable, 'a/b/c', 'a/b', false)
test('exact filter', truthTable, 'a', 'a', true)
test('exact filter is case sensitive', truthTable, 'A/b', 'a/b', false)
test('exact filter with a leading slash', truthTable, '/a', '/a', true)
test('exact filter with a leading slash', truthTable, '/a', 'a', false)
test('exact filter with an empty level', truthTable, 'a//b', 'a//b', true)

// '+' matches exactly one level, whatever it holds (even nothing).
test('single-level wildcard', truthTable, 'a/+', 'a/b', true)
test('single-level wildcard', truthTable, 'a/+/c', 'a/b/c', true)
test('single-level wildcard', truthTable, 'a/+/c', 'a/b/d', false)
test('single-level wildcard does not span levels', truthTable, 'a/+', 'a/b/c', false)
test('single-level wildcard does not match the parent', truthTable, 'a/+', 'a', false)
test('single-level wildcard matches an empty level', truthTable, 'a/+', 'a/', true)
test('single-level wildcard alone', truthTable, '+', 'a', true)
test('single-level wildcard alone', truthTable, '+', 'a/b', false)
test('single-level wildcard at several levels', truthTable, '+/+', 'a/b', true)
test('single-level wildcard at the first level', truthTable, '+/b', 'a/b', true)
test('single-level wildcard matches the empty first level', truthTable, '+/a', '/a', true)

// '#' matches any number of levels, including none: 'a/#' matches 'a' itself.
test('multi-level wildcard', truthTable, 'a/#', 'a/b', true)
test('multi-level wildcard', truthTable, 'a/#', 'a/b/c/d', true)
test('multi-level wildcard matches the parent level', truthTable, 'a/#', 'a', true)
test('multi-level wildcard', truthTable, 'a/#', 'b/c', false)
test('multi-level wildcard needs the prefix to match whole levels', truthTable, 'a/#', 'ab/c', false)
test('multi-level wildcard alone', truthTable, '#', 'a', true)
test('multi-level wildcard alone', truthTable, '#', 'a/b/c', true)
test('multi-level wildcard after a single-level one', truthTable, '+/#', 'a/b/c', true)
test('multi-level wildcard after a single-level one', truthTable, 'a/+/#', 'a/b', true)

// Topics starting with '$' are not matched by a wildcard at the first level.
test('$SYS topics are not matched by a leading #', truthTable, '#', '$SYS/broker/load', false)
test('$SYS topics are not matched by a leading +', truthTable, '+/broker/load', '$SYS/broker/load', false)
test('$SYS topics are matched by a filter naming $SYS', truthTable, '$SYS/#', '$SYS/broker/load', true)
test('$SYS topics are matched by a filter naming $SYS', truthTable, '$SYS/+/load', '$SYS/broker/load', true)
test('$SYS topics are matched exactly', truthTable, '$SYS/broker/load', '$SYS/broker/load', true)
test('a $ elsewhere than the first character is an ordinary character', truthTable, '+/$x', 'a/$x', true)

// A shared subscription's messages arrive on their own topic: the filter after the group decides,
// as it does for delivery to the observers of '$share/<group>/<filter>'.
test('a shared subscription matches by the filter after its group', truthTable, '$share/workers/jobs/+', 'jobs/7', true)
test('a shared subscription matches by the filter after its group', truthTable, '$share/workers/#', 'jobs/7', true)
test('a shared subscription matches by the filter after its group', truthTable, '$share/workers/jobs/+', 'other/7', false)
test('a shared subscription does not match its own name as a topic', truthTable, '$share/workers/jobs/+', '$share/workers/jobs/7', false)
