//! A strict `serde::Deserializer` over the merged tree: TOML values only as their own type
//! (no boolean for a number, no float for an integer), environment strings parsed by the
//! type the key asks for ("2" for an integer, "true"/"false" for a boolean, anything for a
//! string).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};

use super::tree::Node;
use crate::redact::show;

/// Why a value did not deserialize; serde_path_to_error adds where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DeError {
    UnknownField {
        name: String,
        expected: &'static [&'static str],
    },
    MissingField(&'static str),
    Other(String),
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeError::UnknownField { expected, name } => {
                f.write_str("unknown key")?;
                match closest(name, expected) {
                    Some(near) => write!(f, " (did you mean '{near}'?)"),
                    None if expected.is_empty() => Ok(()),
                    None => write!(f, " (expected one of: {})", expected.join(", ")),
                }
            }
            DeError::MissingField(_) => f.write_str("is required"),
            DeError::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::Other(show_message(&msg.to_string()))
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::Other(format!("expected {exp}, found {}", unexpected(&unexp)))
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::Other(format!("expected {exp}, found {}", unexpected(&unexp)))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError::UnknownField {
            name: field.to_string(),
            expected,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        DeError::MissingField(field)
    }
}

fn show_message(m: &str) -> String {
    crate::redact::show_at_most(m, 160)
}

fn unexpected(u: &de::Unexpected<'_>) -> String {
    match u {
        de::Unexpected::Str(s) => format!("'{}'", show(s)),
        de::Unexpected::Bool(b) => format!("a boolean ({b})"),
        de::Unexpected::Unsigned(n) => format!("an integer ({n})"),
        de::Unexpected::Signed(n) => format!("an integer ({n})"),
        de::Unexpected::Float(x) => format!("a float ({x})"),
        other => other.to_string(),
    }
}

/// The expected key nearest to a misspelled one, when it is close enough to be a typo.
fn closest(name: &str, expected: &[&'static str]) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    expected
        .iter()
        .map(|e| (edit_distance(&name, e), *e))
        .filter(|(d, e)| *d <= 1.max(e.len() / 3) && *d < name.chars().count())
        .min_by_key(|(d, _)| *d)
        .map(|(_, e)| e)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(64).collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut row = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            row[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(row[j] + 1);
        }
        prev = row;
    }
    prev[b.len()]
}

/// Deserializes from one node of the tree.
pub(super) struct NodeDe<'a>(pub(super) &'a Node);

impl NodeDe<'_> {
    fn mismatch(&self, expected: &str) -> DeError {
        DeError::Other(format!("expected {expected}, found {}", self.0.describe()))
    }

    /// The integer this node holds, or an environment string that is exactly one.
    fn integer(&self) -> Result<i128, DeError> {
        match self.0 {
            Node::Int(n) => Ok(i128::from(*n)),
            Node::Env { value, .. } => value
                .parse::<i128>()
                .map_err(|_| self.mismatch("a whole number")),
            _ => Err(self.mismatch("a whole number")),
        }
    }
}

macro_rules! integer {
    ($method:ident, $visit:ident, $t:ty) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let n = self.integer()?;
            match <$t>::try_from(n) {
                Ok(v) => visitor.$visit(v),
                Err(_) => Err(DeError::Other(format!(
                    "expected a whole number from {} to {}, found {n}",
                    <$t>::MIN,
                    <$t>::MAX
                ))),
            }
        }
    };
}

impl<'de> de::Deserializer<'de> for NodeDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Node::Str(s) | Node::Env { value: s, .. } => visitor.visit_str(s),
            Node::Int(n) => visitor.visit_i64(*n),
            Node::Float(x) => visitor.visit_f64(*x),
            Node::Bool(b) => visitor.visit_bool(*b),
            Node::Datetime(_) => Err(self.mismatch("a string, number or table")),
            Node::Array(items) => visitor.visit_seq(Seq::new(items)),
            Node::Table(map) => visitor.visit_map(Map::new(map)),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Node::Bool(b) => visitor.visit_bool(*b),
            Node::Env { value, .. } if value == "true" => visitor.visit_bool(true),
            Node::Env { value, .. } if value == "false" => visitor.visit_bool(false),
            _ => Err(self.mismatch("true or false")),
        }
    }

    integer!(deserialize_i8, visit_i8, i8);
    integer!(deserialize_i16, visit_i16, i16);
    integer!(deserialize_i32, visit_i32, i32);
    integer!(deserialize_i64, visit_i64, i64);
    integer!(deserialize_u8, visit_u8, u8);
    integer!(deserialize_u16, visit_u16, u16);
    integer!(deserialize_u32, visit_u32, u32);
    integer!(deserialize_u64, visit_u64, u64);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Node::Float(x) => visitor.visit_f64(*x),
            Node::Int(n) => visitor.visit_f64(*n as f64),
            Node::Env { value, .. } => match value.parse::<f64>() {
                Ok(x) if x.is_finite() => visitor.visit_f64(x),
                _ => Err(self.mismatch("a number")),
            },
            _ => Err(self.mismatch("a number")),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Node::Str(s) | Node::Env { value: s, .. } => visitor.visit_str(s),
            _ => Err(self.mismatch("a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        // An absent key is `None` already; a present one is always a value.
        visitor.visit_some(self)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, DeError> {
        Err(self.mismatch("nothing"))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Node::Array(items) => visitor.visit_seq(Seq::new(items)),
            Node::Env { value, .. } => {
                // An array from the environment is written in TOML: ["a", "b"].
                let parsed = super::tree::parse_env_array(value).ok_or_else(|| {
                    self.mismatch("an array, written in TOML such as [\"a\", \"b\"]")
                })?;
                visitor.visit_seq(Seq::new(&parsed))
            }
            _ => Err(self.mismatch("an array")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Node::Table(map) => visitor.visit_map(Map::new(map)),
            Node::Env { .. } => {
                Err(self.mismatch("a table (set its keys one by one: another `__` level per key)"))
            }
            _ => Err(self.mismatch("a table")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.0 {
            Node::Str(s) | Node::Env { value: s, .. } => {
                visitor.visit_enum(s.as_str().into_deserializer())
            }
            _ => Err(self.mismatch("a string")),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

struct Seq<'a> {
    items: std::slice::Iter<'a, Node>,
}

impl<'a> Seq<'a> {
    fn new(items: &'a [Node]) -> Seq<'a> {
        Seq {
            items: items.iter(),
        }
    }
}

impl<'de> SeqAccess<'de> for Seq<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some(node) => seed.deserialize(NodeDe(node)).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Map<'a> {
    entries: std::collections::btree_map::Iter<'a, String, Node>,
    value: Option<&'a Node>,
}

impl<'a> Map<'a> {
    fn new(map: &'a BTreeMap<String, Node>) -> Map<'a> {
        Map {
            entries: map.iter(),
            value: None,
        }
    }
}

impl<'de> MapAccess<'de> for Map<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            Some((key, value)) => {
                self.value = Some(value);
                let key: de::value::StrDeserializer<'_, DeError> = key.as_str().into_deserializer();
                seed.deserialize(key).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, DeError> {
        let node = self
            .value
            .take()
            .ok_or_else(|| DeError::Other("a value without its key".into()))?;
        seed.deserialize(NodeDe(node))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

#[cfg(test)]
mod tests;
