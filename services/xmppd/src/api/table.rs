//! The API's JSON as text for people: lists as tables with a header, one
//! object as aligned `NAME: value` lines.

use serde_json::Value;

/// A table printed a page at a time: the columns are as wide as their
/// header and the first page's values need, so that a long list is printed
/// as it arrives; a longer value further down widens only its own row.
pub struct Table {
    /// Each column's header and the field of the items it shows.
    columns: Vec<(&'static str, &'static str)>,
    /// Set when the header is printed, with the first page.
    widths: Option<Vec<usize>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, &'static str)]) -> Table {
        Table {
            columns: columns.to_vec(),
            widths: None,
        }
    }

    /// Prints `items` (the header first, on the first call).
    pub fn print(&mut self, items: &[Value]) {
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|item| {
                let cells = self.columns.iter().map(|(_, field)| cell(&item[*field]));
                cells.collect()
            })
            .collect();
        let widths = self.widths.get_or_insert_with(|| {
            let widths = self
                .columns
                .iter()
                .enumerate()
                .map(|(column, (header, _))| {
                    let values = rows.iter().map(|row| row[column].chars().count());
                    values.fold(header.len(), usize::max)
                });
            let widths: Vec<usize> = widths.collect();
            let headers = self.columns.iter().map(|(header, _)| header.to_string());
            println!("{}", line(&headers.collect::<Vec<_>>(), &widths));
            widths
        });
        for row in rows {
            println!("{}", line(&row, widths));
        }
    }
}

/// Cells padded to `widths`, two spaces apart, without trailing blanks.
fn line(cells: &[String], widths: &[usize]) -> String {
    let padded: Vec<String> = cells
        .iter()
        .zip(widths)
        .map(|(cell, width)| format!("{cell:<width$}"))
        .collect();
    padded.join("  ").trim_end().to_string()
}

/// `fields` of `object`, one per line, as `NAME: value`.
pub fn print_fields(object: &Value, fields: &[(&str, &str)]) {
    let width = fields.iter().map(|(name, _)| name.len()).max().unwrap_or(0) + 1;
    for (name, field) in fields {
        let label = format!("{name}:");
        println!("{label:<width$} {}", cell(&object[*field]));
    }
}

/// A JSON value as a cell: text as it is, `yes`/`no`, `-` for none.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::Bool(true) => "yes".to_string(),
        Value::Bool(false) => "no".to_string(),
        Value::String(text) if text.is_empty() => "-".to_string(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn cells_read_as_words() {
        assert_eq!(cell(&json!("a@b")), "a@b");
        assert_eq!(cell(&json!("")), "-");
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!(true)), "yes");
        assert_eq!(cell(&json!(false)), "no");
        assert_eq!(cell(&json!(3)), "3");
        assert_eq!(cell(&json!(1.5)), "1.5");
    }

    #[test]
    fn columns_are_as_wide_as_their_header_or_first_page_needs() {
        let widths = [4, 9];
        assert_eq!(
            line(&["JID".into(), "AVAILABLE".into()], &widths),
            "JID   AVAILABLE"
        );
        assert_eq!(line(&["a@b".into(), "yes".into()], &widths), "a@b   yes");
        assert_eq!(
            line(&["longer@b".into(), "no".into()], &widths),
            "longer@b  no"
        );
    }
}
