// Compiled with `tsc --noEmit` by the test suite. The AWS IoT sample and the "Working with the
// API" samples of the Amplify v3 docs (reference/amplify-pubsub-v3-docs.md), as the docs write
// them apart from the import lines; an ES module, so the top-level awaits stay as written.
import Amplify, { PubSub } from 'native-pubsub';
import { AWSIoTProvider } from 'native-pubsub/lib/Providers';

// Apply plugin with configuration
Amplify.addPluggable(new AWSIoTProvider({
     aws_pubsub_region: '<YOUR-AWS-REGION>',
     aws_pubsub_endpoint: 'wss://xxxxxxxxxxxxx.iot.<YOUR-AWS-REGION>.amazonaws.com/mqtt',
   }));

PubSub.subscribe('myTopic').subscribe({
    next: data => console.log('Message received', data),
    error: error => console.error(error),
    close: () => console.log('Done'),
});

PubSub.subscribe(['myTopic1','myTopic1']).subscribe({
    // ...
});

await PubSub.publish('myTopic1', { msg: 'Hello to all subscribers!' });

await PubSub.publish(['myTopic1','myTopic2'], { msg: 'Hello to all subscribers!' });

const sub1 = PubSub.subscribe('myTopicA').subscribe({
    next: data => console.log('Message received', data),
    error: error => console.error(error),
    close: () => console.log('Done'),
});

sub1.unsubscribe();
// You will no longer get messages for 'myTopicA'

// What old code does with a message and an error: Amplify's { provider, value } and { provider, error }.
PubSub.subscribe('myTopic', { provider: 'AWSIoTProvider' }).subscribe({
    next: ({ provider, value }) => console.log(provider.getProviderName(), value.msg),
    error: ({ provider, error, code }) => console.error(provider?.getProviderName(), error.code === code),
});
