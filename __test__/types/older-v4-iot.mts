// Compiled with `tsc --noEmit` by the test suite. The AWS IoT sample of the Amplify v4 docs
// (reference/amplify-pubsub-v4-docs.md, and the .ja one), as written apart from the import lines.
import Amplify, { PubSub } from 'native-pubsub';
import { AWSIoTProvider } from 'native-pubsub';

// Apply plugin with configuration
Amplify.addPluggable(new AWSIoTProvider({
     aws_pubsub_region: '<YOUR-IOT-REGION>',
     aws_pubsub_endpoint: 'wss://xxxxxxxxxxxxx.iot.<YOUR-IOT-REGION>.amazonaws.com/mqtt',
   }));

await PubSub.publish('myTopic1', { msg: 'Hello to all subscribers!' });

// The named Amplify export, as `import { Amplify } from 'aws-amplify'` (v5) gives it.
import { Amplify as NamedAmplify } from 'native-pubsub';
NamedAmplify.configure({ Auth: { region: 'us-east-1' }, PubSub: { aws_pubsub_region: 'us-east-1' } });
NamedAmplify.addPluggable(new AWSIoTProvider({ aws_pubsub_endpoint: 'wss://x-ats.iot.us-east-1.amazonaws.com/mqtt', clientId: 'c1' }));
