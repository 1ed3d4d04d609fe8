//! Part components that index a part's rows: skip indexes today (the
//! inverted text index plugs in beside them). Each kind supplies a
//! [`crate::part::component::ComponentBuilder`] the part writer feeds
//! granule by granule, and a reader that answers from the component's
//! blocks.

pub mod skip;
pub mod text;

use arrow::datatypes::Schema;

use crate::part::component::ComponentBuilder;
use skip::{SkipIndexBuilder, SkipSpec};

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
