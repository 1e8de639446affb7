//! Lenient readers for the few fields the sidecar must read from an answer.
//!
//! Each wrapper accepts any JSON value and keeps it only when it has the
//! expected shape: `null`, a number where a string was expected, an object
//! where a list was expected are all "absent", never an error, because a
//! provider that already produced (and billed) an answer must not see it
//! refused over a field the sidecar only glances at. Strings are borrowed
//! from the input where they have no escapes, so reading costs no
//! allocation on the per-chunk path.

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use smallvec::SmallVec;
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// A string, or absent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LenientStr<'a>(pub Option<Cow<'a, str>>);

/// A string's length in bytes (as decoded: `\n` is one), or 0 for any
/// other value: for text the sidecar only measures (generated output), so
/// reading it neither keeps nor copies it, escapes or not.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LenientLen(pub usize);

/// A non-negative integer that fits `u32` (integral floats count), or absent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LenientCount(pub Option<u32>);

/// A number, or absent.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct LenientNumber(pub Option<f64>);

/// A list, or empty; elements are read as `T` (make `T` lenient too),
/// kept in `S`: a `Vec` (no allocation while empty), or an [`InlineList`].
#[derive(Debug, Clone, PartialEq)]
pub struct LenientList<T, S = Vec<T>>(pub S, PhantomData<fn() -> T>);

/// A list whose first element is held inline: a stream event has one
/// choice, and reading it must not allocate. Only for a list that is
/// usually there: the inline room makes the view it is in larger, and
/// every move of that view copies it.
pub type InlineList<T> = LenientList<T, SmallVec<[T; 1]>>;

/// Where a [`LenientList`] keeps its elements.
pub trait ListStorage<T>: Default {
    fn push(&mut self, item: T);
}

impl<T> ListStorage<T> for Vec<T> {
    fn push(&mut self, item: T) {
        Vec::push(self, item);
    }
}

impl<T> ListStorage<T> for SmallVec<[T; 1]> {
    fn push(&mut self, item: T) {
        SmallVec::push(self, item);
    }
}

/// An object read as `T`, or absent.
#[derive(Debug, Clone, PartialEq)]
pub struct LenientObject<T>(pub Option<T>);

impl<T, S: ListStorage<T>> Default for LenientList<T, S> {
    fn default() -> Self {
        LenientList(S::default(), PhantomData)
    }
}

impl<T> Default for LenientObject<T> {
    fn default() -> Self {
        LenientObject(None)
    }
}

impl<'a> LenientStr<'a> {
    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// Bytes of the string, 0 when absent.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |text| text.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads and drops whatever compound value the visitor was handed.
fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Visitor methods for the shapes a wrapper does not want: each yields
/// `$absent` after consuming the value.
macro_rules! absent_for_other_shapes {
    ($absent:expr; $($skip:ident),*) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> { Ok($absent) }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> { Ok($absent) }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> { Ok($absent) }
        $(absent_for_other_shapes!(@ $skip $absent);)*
    };
    (@ numbers $absent:expr) => {
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> { Ok($absent) }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> { Ok($absent) }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> { Ok($absent) }
    };
    (@ strings $absent:expr) => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> { Ok($absent) }
    };
    (@ maps $absent:expr) => {
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            skip_map(map).map(|()| $absent)
        }
    };
    (@ seqs $absent:expr) => {
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            skip_seq(seq).map(|()| $absent)
        }
    };
}

impl<'de: 'a, 'a> Deserialize<'de> for LenientStr<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for StrVisitor<'a> {
            type Value = LenientStr<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(LenientStr(Some(Cow::Borrowed(text))))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(LenientStr(Some(Cow::Owned(text.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
                Ok(LenientStr(Some(Cow::Owned(text))))
            }
            absent_for_other_shapes!(LenientStr(None); numbers, maps, seqs);
        }
        deserializer.deserialize_any(StrVisitor(PhantomData))
    }
}

impl<'de> Deserialize<'de> for LenientLen {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LenVisitor;
        impl<'de> Visitor<'de> for LenVisitor {
            type Value = LenientLen;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            // An escaped string comes decoded into the reader's scratch
            // buffer: measured there, never copied.
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(LenientLen(text.len()))
            }
            absent_for_other_shapes!(LenientLen(0); numbers, maps, seqs);
        }
        deserializer.deserialize_any(LenVisitor)
    }
}

impl<'de> Deserialize<'de> for LenientCount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountVisitor;
        impl<'de> Visitor<'de> for CountVisitor {
            type Value = LenientCount;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_u64<E: de::Error>(self, number: u64) -> Result<Self::Value, E> {
                Ok(LenientCount(u32::try_from(number).ok()))
            }
            fn visit_i64<E: de::Error>(self, number: i64) -> Result<Self::Value, E> {
                Ok(LenientCount(u32::try_from(number).ok()))
            }
            fn visit_f64<E: de::Error>(self, number: f64) -> Result<Self::Value, E> {
                let whole = number >= 0.0 && number.fract() == 0.0 && number <= f64::from(u32::MAX);
                Ok(LenientCount(whole.then_some(number as u32)))
            }
            absent_for_other_shapes!(LenientCount(None); strings, maps, seqs);
        }
        deserializer.deserialize_any(CountVisitor)
    }
}

impl<'de> Deserialize<'de> for LenientNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NumberVisitor;
        impl<'de> Visitor<'de> for NumberVisitor {
            type Value = LenientNumber;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_u64<E: de::Error>(self, number: u64) -> Result<Self::Value, E> {
                Ok(LenientNumber(Some(number as f64)))
            }
            fn visit_i64<E: de::Error>(self, number: i64) -> Result<Self::Value, E> {
                Ok(LenientNumber(Some(number as f64)))
            }
            fn visit_f64<E: de::Error>(self, number: f64) -> Result<Self::Value, E> {
                Ok(LenientNumber(Some(number)))
            }
            absent_for_other_shapes!(LenientNumber(None); strings, maps, seqs);
        }
        deserializer.deserialize_any(NumberVisitor)
    }
}

impl<'de, T: Deserialize<'de>, S: ListStorage<T>> Deserialize<'de> for LenientList<T, S> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor<T, S>(PhantomData<(T, S)>);
        impl<'de, T: Deserialize<'de>, S: ListStorage<T>> Visitor<'de> for ListVisitor<T, S> {
            type Value = LenientList<T, S>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = S::default();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(LenientList(items, PhantomData))
            }
            absent_for_other_shapes!(LenientList::default(); numbers, strings, maps);
        }
        deserializer.deserialize_any(ListVisitor(PhantomData))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for LenientObject<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = LenientObject<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|inner| LenientObject(Some(inner)))
            }
            absent_for_other_shapes!(LenientObject(None); numbers, strings, seqs);
        }
        deserializer.deserialize_any(ObjectVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct View<'a> {
        #[serde(borrow)]
        name: LenientStr<'a>,
        count: LenientCount,
        #[serde(borrow)]
        items: LenientList<LenientObject<Item<'a>>>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Item<'a> {
        #[serde(borrow)]
        id: LenientStr<'a>,
    }

    #[test]
    fn expected_shapes_are_read_and_borrowed() {
        let text = r#"{"name":"a","count":3,"items":[{"id":"x","more":[1]},7,null],"other":{}}"#;
        let view: View = serde_json::from_str(text).unwrap();
        assert!(matches!(view.name.0, Some(Cow::Borrowed("a"))));
        assert_eq!(view.count.0, Some(3));
        assert_eq!(view.items.0.len(), 3);
        assert_eq!(view.items.0[0].0.as_ref().unwrap().id.as_deref(), Some("x"));
        assert!(view.items.0[1].0.is_none());
    }

    #[test]
    fn other_shapes_are_absent() {
        for text in [
            r#"{"name":null,"count":null,"items":null}"#,
            r#"{"name":7,"count":"7","items":{"a":1}}"#,
            r#"{"name":[1,{"b":2}],"count":-1,"items":"x"}"#,
            r#"{"name":{"x":[]},"count":1.5,"items":true}"#,
        ] {
            let view: View = serde_json::from_str(text).unwrap();
            assert_eq!(view.name.0, None, "{text}");
            assert_eq!(view.count.0, None, "{text}");
            assert!(view.items.0.is_empty(), "{text}");
        }
        let view: View = serde_json::from_str(r#"{"count":12.0,"name":"\u00e9"}"#).unwrap();
        assert_eq!(view.count.0, Some(12));
        assert_eq!(view.name.as_deref(), Some("é"));
    }

    #[test]
    fn a_measured_string_is_its_decoded_length_and_anything_else_zero() {
        #[derive(Debug, Default, Deserialize)]
        #[serde(default)]
        struct Measured {
            text: LenientLen,
        }
        for (text, len) in [
            (r#"{"text":"four"}"#, 4),
            // Escapes count as what they stand for: 1 + 1 + 2 bytes.
            (r#"{"text":"a\n\u00e9"}"#, 4),
            (r#"{"text":""}"#, 0),
            (r#"{"text":null}"#, 0),
            (r#"{"text":17}"#, 0),
            (r#"{"text":["x"]}"#, 0),
            (r#"{"text":{"x":"yy"}}"#, 0),
            (r#"{}"#, 0),
        ] {
            let measured: Measured = serde_json::from_str(text).unwrap();
            assert_eq!(measured.text.0, len, "{text}");
        }
    }
}
