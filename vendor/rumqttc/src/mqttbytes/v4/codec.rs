use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use super::{Error, Packet};

/// native-pubsub patch: the most the decoder reserves for a packet before its bytes arrive.
const MAX_RESERVE: usize = 64 * 1024;
/// native-pubsub patch: how every HTTP response starts.
const HTTP_ANSWER: &[u8] = b"HTTP/";

/// MQTT v4 codec
#[derive(Debug, Clone)]
pub struct Codec {
    /// Maximum packet size allowed by client
    pub max_incoming_size: usize,
    /// Maximum packet size allowed by broker
    pub max_outgoing_size: usize,
}

impl Decoder for Codec {
    type Item = Packet;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        // native-pubsub patch: a web server's answer (an mqtt:// URL pointed at a WebSocket
        // port) is not read as a packet: 'H' (0x48) would be a PUBACK whose reserved flags are
        // set, which MQTT 3.1.1 calls malformed, and the rest its remaining length and body.
        if src.first() == Some(&b'H') && src.starts_with(HTTP_ANSWER) {
            return Err(Error::HttpAnswer);
        }
        match Packet::read(src, self.max_incoming_size) {
            Ok(packet) => Ok(Some(packet)),
            Err(Error::InsufficientBytes(b)) => {
                // Get more packets to construct the incomplete packet.
                // native-pubsub patch: reserve at most MAX_RESERVE ahead of what arrived. The
                // declared length is the peer's word: 5 bytes can claim 256 MiB, and the
                // WebSocket reader zero-fills all free capacity, making it resident. A larger
                // packet still grows the buffer as its bytes come (doubling, so in O(n)).
                src.reserve(b.min(MAX_RESERVE));
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

impl Encoder<Packet> for Codec {
    type Error = Error;

    fn encode(&mut self, item: Packet, dst: &mut BytesMut) -> Result<(), Self::Error> {
        item.write(dst, self.max_outgoing_size)?;

        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use tokio_util::codec::Encoder;

    use super::Codec;
    use crate::{mqttbytes::Error, Packet, Publish, QoS};

    #[test]
    fn outgoing_max_packet_size_check() {
        let mut buf = BytesMut::new();
        let mut codec = Codec {
            max_incoming_size: 100,
            max_outgoing_size: 200,
        };

        let mut small_publish = Publish::new("hello/world", QoS::AtLeastOnce, vec![1; 100]);
        small_publish.pkid = 1;
        codec
            .encode(Packet::Publish(small_publish), &mut buf)
            .unwrap();

        let large_publish = Publish::new("hello/world", QoS::AtLeastOnce, vec![1; 265]);
        match codec.encode(Packet::Publish(large_publish), &mut buf) {
            Err(Error::OutgoingPacketTooLarge {
                pkt_size: 281,
                max: 200,
            }) => {}
            _ => unreachable!(),
        }
    }
}
