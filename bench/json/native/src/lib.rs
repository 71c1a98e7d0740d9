//! The native side of bench/json: JSON bytes <-> JS values through serde_json, the alternatives
//! to V8's own JSON.parse / JSON.stringify. Only for measuring; not part of the addon.

use std::fmt;
use std::ptr;

use napi::bindgen_prelude::{Buffer, BufferSlice, ToNapiValue};
use napi::{sys, Env, Error, Result, Status};
use napi_derive::napi;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

fn range(buf: &[u8], start: u32, end: u32) -> Result<&[u8]> {
    buf.get(start as usize..end as usize)
        .ok_or_else(|| Error::new(Status::InvalidArg, "start/end out of range".to_owned()))
}

fn json_error(error: serde_json::Error) -> Error {
    Error::new(Status::InvalidArg, error.to_string())
}

/// The call alone: what any native variant pays before doing work (reads the Buffer's bytes).
#[napi]
pub fn noop(buf: &[u8], start: u32, end: u32) -> Result<u32> {
    Ok(range(buf, start, end)?.len() as u32)
}

/// Receive, (b): `serde_json::from_slice` into a `serde_json::Value`, then napi-rs's conversion
/// of that Value into JS objects.
#[napi]
pub fn parse_json(buf: &[u8], start: u32, end: u32) -> Result<serde_json::Value> {
    serde_json::from_slice(range(buf, start, end)?).map_err(json_error)
}

/// Receive, (b'): serde_json's parser driving a Visitor that builds the JS values as it goes,
/// no intermediate `serde_json::Value`.
#[napi]
pub fn parse_json_direct(env: Env, buf: &[u8], start: u32, end: u32) -> Result<Raw> {
    let bytes = range(buf, start, end)?;
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = Build(env.raw()).deserialize(&mut deserializer).map_err(json_error)?;
    deserializer.end().map_err(json_error)?;
    Ok(Raw(value))
}

/// Send, (b): napi-rs's conversion of the JS value into a `serde_json::Value`, then
/// `serde_json::to_vec`, handed back as a new Buffer.
#[napi]
pub fn stringify_json(value: serde_json::Value) -> Result<Buffer> {
    Ok(serde_json::to_vec(&value).map_err(json_error)?.into())
}

/// Send, (b'): as `stringifyJson`, but the bytes written into `buf` at `offset` (as the
/// product's publish queue does with the JS string); returns the byte count.
#[napi]
pub fn stringify_json_into(value: serde_json::Value, mut buf: BufferSlice, offset: u32) -> Result<u32> {
    let out = buf
        .get_mut(offset as usize..)
        .ok_or_else(|| Error::new(Status::InvalidArg, "offset out of range".to_owned()))?;
    let room = out.len();
    let mut writer = &mut *out;
    serde_json::to_writer(&mut writer, &value).map_err(json_error)?;
    Ok((room - writer.len()) as u32)
}

/// A JS value made by hand, returned as it is.
pub struct Raw(sys::napi_value);

impl ToNapiValue for Raw {
    unsafe fn to_napi_value(_env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        Ok(val.0)
    }
}

#[derive(Clone, Copy)]
struct Build(sys::napi_env);

fn check<E: de::Error>(status: sys::napi_status, what: &str) -> std::result::Result<(), E> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(E::custom(format_args!("{what} failed (napi status {status})")))
    }
}

impl Build {
    fn string<E: de::Error>(self, s: &str) -> std::result::Result<sys::napi_value, E> {
        let mut out = ptr::null_mut();
        check(
            unsafe { sys::napi_create_string_utf8(self.0, s.as_ptr().cast(), s.len() as isize, &mut out) },
            "napi_create_string_utf8",
        )?;
        Ok(out)
    }

    fn number<E: de::Error>(self, n: f64) -> std::result::Result<sys::napi_value, E> {
        // JSON.parse gives every number as a double.
        let mut out = ptr::null_mut();
        check(unsafe { sys::napi_create_double(self.0, n, &mut out) }, "napi_create_double")?;
        Ok(out)
    }
}

impl<'de> DeserializeSeed<'de> for Build {
    type Value = sys::napi_value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> std::result::Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Build {
    type Value = sys::napi_value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<Self::Value, E> {
        let mut out = ptr::null_mut();
        check(unsafe { sys::napi_get_boolean(self.0, v, &mut out) }, "napi_get_boolean")?;
        Ok(out)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Self::Value, E> {
        self.number(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Self::Value, E> {
        self.number(v as f64)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Self::Value, E> {
        self.number(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
        self.string(v)
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
        let mut out = ptr::null_mut();
        check(unsafe { sys::napi_get_null(self.0, &mut out) }, "napi_get_null")?;
        Ok(out)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Self::Value, A::Error> {
        let mut array = ptr::null_mut();
        check(unsafe { sys::napi_create_array(self.0, &mut array) }, "napi_create_array")?;
        let mut index = 0u32;
        while let Some(element) = seq.next_element_seed(self)? {
            check(unsafe { sys::napi_set_element(self.0, array, index, element) }, "napi_set_element")?;
            index += 1;
        }
        Ok(array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        let mut object = ptr::null_mut();
        check(unsafe { sys::napi_create_object(self.0, &mut object) }, "napi_create_object")?;
        while let Some(key) = map.next_key_seed(Key(self))? {
            let value = map.next_value_seed(self)?;
            check(unsafe { sys::napi_set_property(self.0, object, key, value) }, "napi_set_property")?;
        }
        Ok(object)
    }
}

/// An object key, made a JS string straight from serde_json's (usually borrowed) str.
struct Key(Build);

impl<'de> DeserializeSeed<'de> for Key {
    type Value = sys::napi_value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> std::result::Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = sys::napi_value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
        self.0.string(v)
    }
}
