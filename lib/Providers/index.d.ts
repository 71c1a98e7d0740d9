// native-pubsub/lib/Providers: the provider classes of the older Amplify docs.
export { AWSIoTProvider, MqttOverWSProvider } from '../../index'
