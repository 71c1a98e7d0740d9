// Compiled with `tsc --noEmit` by the test suite. The older docs' samples in a CommonJS-format
// TypeScript file (this folder's package is not "type": "module"): the imports compile to
// require(), the default import reads `default`. Top-level await is not allowed in CommonJS,
// so the awaits are inside an async function.
import Amplify, { PubSub, AWSIoTProvider, MqttOverWSProvider, ProviderMessage, ProviderError, PubSubError } from 'native-pubsub';
import Pubsub from 'native-pubsub';
import { AWSIoTProvider as DeepAWSIoTProvider } from 'native-pubsub/lib/Providers';

Amplify.addPluggable(new AWSIoTProvider({
     aws_pubsub_region: '<YOUR-AWS-REGION>',
     aws_pubsub_endpoint: 'wss://xxxxxxxxxxxxx.iot.<YOUR-AWS-REGION>.amazonaws.com/mqtt',
   }));
Amplify.addPluggable(new MqttOverWSProvider({
    aws_pubsub_endpoint: 'wss://iot.eclipse.org:443/mqtt',
}));
Pubsub.configure();

export async function samples(): Promise<void> {
  PubSub.subscribe('myTopic').subscribe({
      next: data => console.log('Message received', data),
      error: error => console.error(error),
      close: () => console.log('Done'),
  });
  await PubSub.publish('myTopic1', { msg: 'Hello to all subscribers!' });
  await PubSub.publish(['myTopic1','myTopic2'], { msg: 'Hello to all subscribers!' });
  const sub1 = PubSub.subscribe('myTopicA').subscribe({
      next: data => console.log('Message received', data),
      error: error => console.error(error),
      close: () => console.log('Done'),
  });
  sub1.unsubscribe();

  // Typed: the message and its provider, an error with a code, the provider picked by name.
  PubSub.subscribe<{ msg: string }>('myTopic', { provider: 'MqttOverWSProvider', qos: 1 }).subscribe({
    next: (data: ProviderMessage<{ msg: string }>) => console.log(data.value.msg, data.provider.clientId),
    error: (error: ProviderError) => console.error(error.code, error.error.message),
  });
  PubSub.subscribe('t', { format: 'string' }).subscribe(({ value }) => value.toUpperCase());
  PubSub.subscribe({ topics: 't', options: { format: 'binary' } }).subscribe(({ value }) => value.readUInt8(0));
  const plain: PubSubError = await PubSub.publish({ topics: 't', message: 1, options: { provider: 'AWSIoTProvider' } }).then(
    () => { throw new Error('unexpected') },
    (error: PubSubError) => error,
  );
  void plain;
  await PubSub.addPluggable(new DeepAWSIoTProvider({ aws_pubsub_endpoint: 'x-ats.iot.us-east-1.amazonaws.com', credentials: async () => ({ accessKeyId: 'AKID', secretAccessKey: 's' }) }));
  await PubSub.removePluggable('AWSIoTProvider');
  const iot: AWSIoTProvider = new AWSIoTProvider();
  const name: 'AWSIoTProvider' = iot.getProviderName();
  const category: 'PubSub' = iot.getCategory();
  await iot.publish('t', { still: 'an instance' });
  void name, category;
  PubSub.configure({ aws_project_region: 'us-east-1', aws_cognito_identity_pool_id: 'x', PubSub: { aws_pubsub_region: 'us-east-1', ssr: true } });
  Amplify.configure({ aws_pubsub_region: 'us-east-1', aws_pubsub_endpoint: 'wss://x/mqtt' });
  // Still a class.
  const instance = new PubSub({ endpoint: 'wss://x-ats.iot.us-east-1.amazonaws.com/mqtt' });
  await instance.close();
}
