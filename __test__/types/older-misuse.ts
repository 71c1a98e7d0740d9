// Each marked line must be a type error (see misuse.ts).
import { PubSub, Amplify, AWSIoTProvider, MqttOverWSProvider } from 'native-pubsub';

// @ts-expect-error addPluggable takes a provider instance
PubSub.addPluggable({});
// @ts-expect-error Amplify.addPluggable takes a provider instance, not its class
Amplify.addPluggable(AWSIoTProvider);
// @ts-expect-error removePluggable takes a provider name
void PubSub.removePluggable(new MqttOverWSProvider({ aws_pubsub_endpoint: 'ws://h/mqtt' }));
// @ts-expect-error configure takes an object
PubSub.configure('us-east-1');
// @ts-expect-error configure's provider options keep their types
PubSub.configure({ PubSub: { keepAlive: '60' } });
// @ts-expect-error the AWS IoT provider has no username
new AWSIoTProvider({ aws_pubsub_endpoint: 'wss://h/mqtt', username: 'u' });
// @ts-expect-error the generic provider has no credentials
new MqttOverWSProvider({ aws_pubsub_endpoint: 'wss://h/mqtt', credentials: { accessKeyId: 'a', secretAccessKey: 's' } });
// @ts-expect-error the singleton's messages are { provider, value }
PubSub.subscribe('t', { format: 'string' }).subscribe((value: string) => value);
// @ts-expect-error the v6 form with format 'binary' gives a Buffer, not a string
PubSub.subscribe({ topics: 't', options: { format: 'binary' } }).subscribe(({ value }) => value.toUpperCase());
// @ts-expect-error options.provider is a name
void PubSub.publish('t', 1, { provider: 1 });
