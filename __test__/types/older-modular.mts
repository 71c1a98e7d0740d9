// Compiled with `tsc --noEmit` by the test suite. "Using Modular Imports" of the Amplify v3 and
// v4 docs, as written apart from the import line: the default export is the PubSub singleton.
import Pubsub from 'native-pubsub';

Pubsub.configure();

// The same with the other entry points' default exports.
import MqttPubSub from 'native-pubsub/mqtt';
import IotPubSub from 'native-pubsub/iot';
MqttPubSub.configure({ PubSub: { aws_pubsub_endpoint: 'ws://127.0.0.1:1883/mqtt' } });
const configured: { aws_pubsub_endpoint?: string } = IotPubSub.configure();
void configured;
