import providers from './index.js'

export const { AWSIoTProvider, MqttOverWSProvider } = providers
