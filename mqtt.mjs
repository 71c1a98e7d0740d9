import entry from './mqtt.js'

export const {
  PubSub,
  ConnectionState,
  CONNECTION_STATE_CHANGE,
  CONTROL_MSG,
  TOPIC,
  Hub,
  mqttTopicMatch,
  Amplify,
  AWSIoTProvider,
  MqttOverWSProvider,
} = entry
export default PubSub
