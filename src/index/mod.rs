//! Part components that index a part's rows: skip indexes and the
//! inverted text index. Each kind supplies a
//! [`crate::part::component::ComponentBuilder`] the part writer feeds
//! granule by granule, and a reader that answers from the component's
//! blocks.

pub mod skip;
pub mod text;

use std::collections::BTreeMap;

use arrow::datatypes::Schema;

use crate::part::component::{ComponentBuilder, ComponentMeta};
use skip::{SkipIndexBuilder, SkipSpec};
use text::Analyzer;
use text::component::TextIndexBuilder;

/// Builders for the declared skip indexes of `schema`'s columns (by name),
/// in a stable order; `minmax` needs none.
pub fn skip_builders<'a>(
    schema: &Schema,
    declared: impl IntoIterator<Item = (&'a String, &'a SkipSpec)>,
) -> Vec<Box<dyn ComponentBuilder>> {
    declared
        .into_iter()
        .filter(|(_, spec)| spec.has_component())
        .filter_map(|(column, spec)| {
            let position = schema.index_of(column).ok()?;
            Some(Box::new(SkipIndexBuilder::new(position, column, *spec))
                as Box<dyn ComponentBuilder>)
        })
        .collect()
}

/// Builders for the text indexes of `schema`'s columns (by name).
pub fn text_builders(
    schema: &Schema,
    declared: &BTreeMap<String, Analyzer>,
) -> Vec<Box<dyn ComponentBuilder>> {
    declared
        .iter()
        .filter_map(|(column, analyzer)| {
            let position = schema.index_of(column).ok()?;
            Some(Box::new(TextIndexBuilder::new(position, column, *analyzer))
                as Box<dyn ComponentBuilder>)
        })
        .collect()
}

/// The text index of `column` analysed by `analyzer` among `components`
/// (a part written before the index was declared, or with another
/// analyzer, has none).
pub fn text_index_meta<'a>(
    components: &'a [ComponentMeta],
    column: &str,
    analyzer: &Analyzer,
) -> Option<&'a ComponentMeta> {
    let params = analyzer.to_string();
    components.iter().find(|c| {
        c.kind == text::component::KIND
            && text::component::readable(c.version)
            && c.columns.first().map(String::as_str) == Some(column)
            && c.params == params
    })
}
