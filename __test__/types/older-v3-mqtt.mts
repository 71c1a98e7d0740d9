// Compiled with `tsc --noEmit` by the test suite. The "Third Party MQTT Providers" sample of the
// Amplify v3 and v4 docs, as written apart from the import lines. The sample calls
// `Amplify.addPluggable` without importing Amplify; the changed import line brings it in.
import Amplify, { PubSub } from 'native-pubsub';
import { MqttOverWSProvider } from "native-pubsub/lib/Providers";

// Apply plugin with configuration
Amplify.addPluggable(new MqttOverWSProvider({
    aws_pubsub_endpoint: 'wss://iot.eclipse.org:443/mqtt',
}));

await PubSub.publish('myTopic1', { msg: 'Hello to all subscribers!' }, { provider: 'MqttOverWSProvider' });
