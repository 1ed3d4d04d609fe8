//! What users write: elements of a series, each with a key of their
//! choosing, an opaque payload and named tags; and their columnar form.
//!
//! A batch of elements becomes one Arrow batch with the columns
//! `series_id`, `key`, `data` and one nullable column per tag the batch
//! names (an element without a tag holds NULL there). A tag's type is fixed
//! by its first write; [`validate`] checks every batch, whichever way it
//! came in (elements, or a `RecordBatch` from SQL).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, GenericListBuilder, Int64Builder, RecordBatch,
    StringBuilder, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema};

use crate::error::{Error, Result};
use crate::table::options::{SIDX_COLUMNS, is_tag_type};

/// One element: a row of the index.
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    /// The series the element belongs to; 0 is not a series.
    pub series_id: u64,
    /// The user's ordering key (a timestamp, a latency, a score...).
    pub key: i64,
    /// The payload, returned as stored; never empty.
    pub data: Vec<u8>,
    pub tags: Vec<Tag>,
}

impl Element {
    pub fn new(series_id: u64, key: i64, data: impl Into<Vec<u8>>) -> Self {
        Element {
            series_id,
            key,
            data: data.into(),
            tags: Vec::new(),
        }
    }

    /// Adds a tag.
    pub fn tag(mut self, name: impl Into<String>, value: impl Into<TagValue>) -> Self {
        self.tags.push(Tag {
            name: name.into(),
            value: value.into(),
        });
        self
    }
}

/// A named value of an element.
#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    pub name: String,
    pub value: TagValue,
}

/// A tag's value: a string, an int64, bytes, or a list of one of them.
#[derive(Debug, Clone, PartialEq)]
pub enum TagValue {
    Str(String),
    Int(i64),
    Bytes(Vec<u8>),
    StrList(Vec<String>),
    IntList(Vec<i64>),
    BytesList(Vec<Vec<u8>>),
}

impl TagValue {
    pub fn tag_type(&self) -> TagType {
        match self {
            TagValue::Str(_) => TagType::Str,
            TagValue::Int(_) => TagType::Int,
            TagValue::Bytes(_) => TagType::Bytes,
            TagValue::StrList(_) => TagType::StrList,
            TagValue::IntList(_) => TagType::IntList,
            TagValue::BytesList(_) => TagType::BytesList,
        }
    }
}

impl From<&str> for TagValue {
    fn from(v: &str) -> Self {
        TagValue::Str(v.to_string())
    }
}

impl From<String> for TagValue {
    fn from(v: String) -> Self {
        TagValue::Str(v)
    }
}

impl From<i64> for TagValue {
    fn from(v: i64) -> Self {
        TagValue::Int(v)
    }
}

impl From<Vec<u8>> for TagValue {
    fn from(v: Vec<u8>) -> Self {
        TagValue::Bytes(v)
    }
}

impl From<Vec<&str>> for TagValue {
    fn from(v: Vec<&str>) -> Self {
        TagValue::StrList(v.into_iter().map(str::to_string).collect())
    }
}

impl From<Vec<String>> for TagValue {
    fn from(v: Vec<String>) -> Self {
        TagValue::StrList(v)
    }
}

impl From<Vec<i64>> for TagValue {
    fn from(v: Vec<i64>) -> Self {
        TagValue::IntList(v)
    }
}

/// The type of a tag, fixed by its first write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TagType {
    Str,
    Int,
    Bytes,
    StrList,
    IntList,
    BytesList,
}

impl TagType {
    pub fn data_type(self) -> DataType {
        let list = |t: DataType| DataType::List(Arc::new(Field::new("item", t, true)));
        match self {
            TagType::Str => DataType::Utf8,
            TagType::Int => DataType::Int64,
            TagType::Bytes => DataType::Binary,
            TagType::StrList => list(DataType::Utf8),
            TagType::IntList => list(DataType::Int64),
            TagType::BytesList => list(DataType::Binary),
        }
    }

    /// The tag type of a column type, if it is one.
    pub fn of(data_type: &DataType) -> Option<TagType> {
        if !is_tag_type(data_type) {
            return None;
        }
        Some(match data_type {
            DataType::Utf8 => TagType::Str,
            DataType::Int64 => TagType::Int,
            DataType::Binary => TagType::Bytes,
            DataType::List(item) => match item.data_type() {
                DataType::Utf8 => TagType::StrList,
                DataType::Int64 => TagType::IntList,
                _ => TagType::BytesList,
            },
            _ => return None,
        })
    }

    /// The field of a tag column.
    pub fn field(self, name: &str) -> Field {
        Field::new(name, self.data_type(), true)
    }
}

/// Whether `name` is one of the fixed columns, which no tag may be named.
pub fn is_reserved(name: &str) -> bool {
    SIDX_COLUMNS.iter().any(|(c, _)| *c == name)
}

/// `elements` as one batch: the fixed columns, then a column per tag in
/// order of first appearance. Checks what [`validate`] checks, naming the
/// element.
pub fn to_batch(elements: &[Element]) -> Result<RecordBatch> {
    let mut tag_types: Vec<(String, TagType)> = Vec::new();
    let mut positions: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, element) in elements.iter().enumerate() {
        for tag in &element.tags {
            check_tag_name(&tag.name).map_err(|e| e.context(format!("element {i}")))?;
            let t = tag.value.tag_type();
            match positions.get(tag.name.as_str()) {
                Some(&p) if tag_types[p].1 != t => {
                    return Err(Error::Invalid(format!(
                        "element {i}: tag '{}' is {t:?} here and {:?} in an earlier element",
                        tag.name, tag_types[p].1
                    )));
                }
                Some(_) => {}
                None => {
                    positions.insert(&tag.name, tag_types.len());
                    tag_types.push((tag.name.clone(), t));
                }
            }
        }
    }
    let mut fields: Vec<Field> = SIDX_COLUMNS[..3]
        .iter()
        .map(|(name, t)| Field::new(*name, t.clone(), false))
        .collect();
    let series = UInt64Array::from_iter_values(elements.iter().map(|e| e.series_id));
    let keys = arrow::array::Int64Array::from_iter_values(elements.iter().map(|e| e.key));
    let data = arrow::array::BinaryArray::from_iter_values(elements.iter().map(|e| &e.data));
    let mut columns: Vec<ArrayRef> = vec![Arc::new(series), Arc::new(keys), Arc::new(data)];
    for (name, t) in &tag_types {
        fields.push(t.field(name));
        let values = elements.iter().map(|e| {
            // The last value of a tag named twice in one element wins.
            e.tags
                .iter()
                .rev()
                .find(|tag| &tag.name == name)
                .map(|tag| &tag.value)
        });
        columns.push(tag_column(*t, values));
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    validate(&batch)?;
    Ok(batch)
}

/// One tag's column over the elements (`None`: the element lacks it).
fn tag_column<'a>(t: TagType, values: impl Iterator<Item = Option<&'a TagValue>>) -> ArrayRef {
    match t {
        TagType::Str => {
            let mut b = StringBuilder::new();
            for v in values {
                b.append_option(match v {
                    Some(TagValue::Str(s)) => Some(s.as_str()),
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        TagType::Int => {
            let mut b = Int64Builder::new();
            for v in values {
                b.append_option(match v {
                    Some(TagValue::Int(n)) => Some(*n),
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        TagType::Bytes => {
            let mut b = BinaryBuilder::new();
            for v in values {
                b.append_option(match v {
                    Some(TagValue::Bytes(s)) => Some(s.as_slice()),
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        TagType::StrList => {
            let mut b = GenericListBuilder::<i32, _>::new(StringBuilder::new());
            for v in values {
                match v {
                    Some(TagValue::StrList(items)) => {
                        items.iter().for_each(|s| b.values().append_value(s));
                        b.append(true);
                    }
                    _ => b.append(false),
                }
            }
            Arc::new(b.finish())
        }
        TagType::IntList => {
            let mut b = GenericListBuilder::<i32, _>::new(Int64Builder::new());
            for v in values {
                match v {
                    Some(TagValue::IntList(items)) => {
                        items.iter().for_each(|n| b.values().append_value(*n));
                        b.append(true);
                    }
                    _ => b.append(false),
                }
            }
            Arc::new(b.finish())
        }
        TagType::BytesList => {
            let mut b = GenericListBuilder::<i32, _>::new(BinaryBuilder::new());
            for v in values {
                match v {
                    Some(TagValue::BytesList(items)) => {
                        items.iter().for_each(|s| b.values().append_value(s));
                        b.append(true);
                    }
                    _ => b.append(false),
                }
            }
            Arc::new(b.finish())
        }
    }
}

fn check_tag_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::Invalid("a tag has an empty name".into()));
    }
    if is_reserved(name) {
        return Err(Error::Invalid(format!(
            "'{name}' is a column of every element, not a tag name"
        )));
    }
    Ok(())
}

/// Checks a batch to be written: `series_id` (UInt64, never 0 or NULL),
/// `key` (Int64, never NULL) and `data` (Binary, never empty or NULL) by
/// name, and every other column a tag of a tag type. Errors name the
/// column, and the row where a value is wrong.
pub fn validate(batch: &RecordBatch) -> Result<()> {
    let schema = batch.schema();
    for (name, data_type) in &SIDX_COLUMNS[..3] {
        let Some((_, field)) = schema.column_with_name(name) else {
            return Err(Error::Invalid(format!("the batch has no column '{name}'")));
        };
        if field.data_type() != data_type {
            return Err(Error::Invalid(format!(
                "column '{name}' is {}, not {data_type}",
                field.data_type()
            )));
        }
    }
    let column = |name: &str| batch.column_by_name(name).expect("checked above");
    let series = column("series_id");
    let series = series.as_primitive::<arrow::datatypes::UInt64Type>();
    if let Some(row) = (0..batch.num_rows()).find(|&r| series.is_null(r) || series.value(r) == 0) {
        return Err(Error::Invalid(format!(
            "row {row}: series id 0 (or NULL); series ids start at 1"
        )));
    }
    if let Some(row) = first_null(column("key")) {
        return Err(Error::Invalid(format!("row {row}: the key is NULL")));
    }
    let data = column("data");
    let data = data.as_binary::<i32>();
    if let Some(row) = (0..batch.num_rows()).find(|&r| data.is_null(r) || data.value(r).is_empty())
    {
        return Err(Error::Invalid(format!(
            "row {row}: the data is empty (or NULL)"
        )));
    }
    for field in schema.fields() {
        let name = field.name();
        if SIDX_COLUMNS[..3].iter().any(|(c, _)| c == name) {
            continue;
        }
        check_tag_name(name)?;
        if TagType::of(field.data_type()).is_none() {
            return Err(Error::Invalid(format!(
                "tag '{name}' has type {}; a tag is a string, int64, bytes or a list of one",
                field.data_type()
            )));
        }
    }
    Ok(())
}

fn first_null(array: &ArrayRef) -> Option<usize> {
    (array.null_count() > 0).then(|| (0..array.len()).find(|&r| array.is_null(r)))?
}
