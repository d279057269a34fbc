//! The CSV form of a workload: a small hand-written reader and writer.
//!
//! One record per line (no line breaks inside fields); fields separated by
//! commas; a field may be wrapped in double quotes, inside which `""` is a
//! quote and commas are literal. Blank lines and lines starting with `#`
//! are skipped. The first other line is the header: column names in any
//! order, required ones present, no unknown or repeated names.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Constraint, ConstraintOp, Node, Task, WorkloadError, seconds_to_millis};
use crate::error::quoted;
use crate::ids::{AgentId, TaskId};
use crate::resources::Scalar;
use crate::time::Time;

const NODES: &str = "nodes.csv";
const TASKS: &str = "tasks.csv";

const NODE_COLUMNS: [&str; 5] = ["id", "cpus", "mem", "disk", "attributes"];
const TASK_COLUMNS: [&str; 7] = [
    "id",
    "cpus",
    "mem",
    "disk",
    "arrival",
    "duration",
    "constraints",
];
const REQUIRED: [&str; 3] = ["id", "cpus", "mem"];

/// A CSV file being read: the column positions from the header and the
/// records that follow, with their line numbers.
struct Table {
    file: &'static str,
    columns: Vec<&'static str>,
    rows: Vec<(usize, Vec<String>)>,
}

fn error(file: &'static str, line: usize, column: Option<&str>, message: String) -> WorkloadError {
    WorkloadError::Csv {
        file,
        line,
        column: column.map(str::to_owned),
        message,
    }
}

/// Splits one line into fields, honouring double quotes.
fn split_fields(
    file: &'static str,
    line_no: usize,
    line: &str,
) -> Result<Vec<String>, WorkloadError> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        // Leading spaces before a quote are allowed.
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => {
                        return Err(error(
                            file,
                            line_no,
                            None,
                            format!("field {} has an unterminated quote", fields.len() + 1),
                        ));
                    }
                }
            }
            while chars.peek() == Some(&' ') {
                chars.next();
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => {
                    return Err(error(
                        file,
                        line_no,
                        None,
                        format!(
                            "field {} has {c:?} after its closing quote (expected a comma)",
                            fields.len() + 1
                        ),
                    ));
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field.trim().to_owned());
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => {
                        return Err(error(
                            file,
                            line_no,
                            None,
                            format!(
                                "field {} has a quote inside an unquoted value (quote the whole field and double the quote)",
                                fields.len() + 1
                            ),
                        ));
                    }
                    Some(c) => field.push(c),
                }
            }
            fields.push(field.trim().to_owned());
        }
    }
}

impl Table {
    fn parse(
        file: &'static str,
        input: &str,
        known: &[&'static str],
    ) -> Result<Table, WorkloadError> {
        let mut columns: Option<Vec<&'static str>> = None;
        let mut rows = Vec::new();
        let mut last_line = 0;
        for (i, raw) in input.lines().enumerate() {
            let line_no = i + 1;
            last_line = line_no;
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let fields = split_fields(file, line_no, line)?;
            match &columns {
                None => {
                    let mut cols = Vec::with_capacity(fields.len());
                    for name in &fields {
                        let Some(&k) = known.iter().find(|k| **k == name.as_str()) else {
                            return Err(error(
                                file,
                                line_no,
                                Some(name),
                                format!("unknown column (known: {})", known.join(", ")),
                            ));
                        };
                        if cols.contains(&k) {
                            return Err(error(
                                file,
                                line_no,
                                Some(name),
                                "column given twice".to_owned(),
                            ));
                        }
                        cols.push(k);
                    }
                    for r in REQUIRED {
                        if !cols.contains(&r) {
                            return Err(error(
                                file,
                                line_no,
                                Some(r),
                                "required column missing from the header".to_owned(),
                            ));
                        }
                    }
                    columns = Some(cols);
                }
                Some(cols) => {
                    if fields.len() != cols.len() {
                        return Err(error(
                            file,
                            line_no,
                            None,
                            format!(
                                "expected {} fields as in the header, found {}",
                                cols.len(),
                                fields.len()
                            ),
                        ));
                    }
                    rows.push((line_no, fields));
                }
            }
        }
        let Some(columns) = columns else {
            return Err(error(
                file,
                last_line.max(1),
                None,
                format!(
                    "no header line (expected columns such as {})",
                    known.join(",")
                ),
            ));
        };
        Ok(Table {
            file,
            columns,
            rows,
        })
    }
}

/// One record with its line, for typed field access.
struct Row<'t> {
    file: &'static str,
    line: usize,
    columns: &'t [&'static str],
    fields: &'t [String],
}

impl Row<'_> {
    /// The field of `column`, or `None` if the column is absent or the
    /// field empty.
    fn get(&self, column: &str) -> Option<&str> {
        let i = self.columns.iter().position(|c| *c == column)?;
        let f = self.fields[i].as_str();
        (!f.is_empty()).then_some(f)
    }

    fn err(&self, column: &str, message: String) -> WorkloadError {
        error(self.file, self.line, Some(column), message)
    }

    fn required(&self, column: &str) -> Result<&str, WorkloadError> {
        self.get(column)
            .ok_or_else(|| self.err(column, "required field is empty".to_owned()))
    }

    fn number(&self, column: &str, value: &str) -> Result<f64, WorkloadError> {
        value
            .parse::<f64>()
            .map_err(|_| self.err(column, format!("{} is not a number", quoted(value))))
    }

    fn scalar(&self, column: &'static str, required: bool) -> Result<Scalar, WorkloadError> {
        let value = if required {
            self.required(column)?
        } else {
            match self.get(column) {
                Some(v) => v,
                None => return Ok(Scalar::ZERO),
            }
        };
        let v = self.number(column, value)?;
        Scalar::from_f64(column, v).map_err(|e| self.err(column, e.to_string()))
    }

    fn seconds(&self, column: &'static str) -> Result<Option<u64>, WorkloadError> {
        let Some(value) = self.get(column) else {
            return Ok(None);
        };
        let v = self.number(column, value)?;
        seconds_to_millis(column, v)
            .map(Some)
            .map_err(|e| self.err(column, e))
    }
}

fn rows(table: &Table) -> impl Iterator<Item = Row<'_>> {
    table.rows.iter().map(|(line, fields)| Row {
        file: table.file,
        line: *line,
        columns: &table.columns,
        fields,
    })
}

/// `key=value;key=value`.
fn parse_attributes(row: &Row<'_>, value: &str) -> Result<BTreeMap<String, String>, WorkloadError> {
    let mut out = BTreeMap::new();
    for part in value.split(';') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some((k, v)) = part.split_once('=') else {
            return Err(row.err("attributes", format!("{} is not key=value", quoted(part))));
        };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() {
            return Err(row.err("attributes", format!("{} has an empty key", quoted(part))));
        }
        if out.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(row.err("attributes", format!("attribute {} given twice", quoted(k))));
        }
    }
    Ok(out)
}

/// `key==value;key!=value`.
fn parse_constraints(row: &Row<'_>, value: &str) -> Result<Vec<Constraint>, WorkloadError> {
    let mut out = Vec::new();
    for part in value.split(';') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (k, op, v) = if let Some((k, v)) = part.split_once("!=") {
            (k, ConstraintOp::NotEquals, v)
        } else if let Some((k, v)) = part.split_once("==") {
            (k, ConstraintOp::Equals, v)
        } else {
            return Err(row.err(
                "constraints",
                format!(
                    "{} is not attribute==value or attribute!=value",
                    quoted(part)
                ),
            ));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(row.err(
                "constraints",
                format!("{} has an empty attribute name", quoted(part)),
            ));
        }
        out.push(Constraint {
            attribute: k.to_owned(),
            op,
            value: v.trim().to_owned(),
        });
    }
    Ok(out)
}

pub(super) fn parse_nodes(input: &str) -> Result<Vec<Node>, WorkloadError> {
    let table = Table::parse(NODES, input, &NODE_COLUMNS)?;
    rows(&table)
        .map(|row| {
            let id = row.required("id")?;
            let id = AgentId::new(id).map_err(|e| row.err("id", e.to_string()))?;
            let attributes = match row.get("attributes") {
                Some(v) => parse_attributes(&row, v)?,
                None => BTreeMap::new(),
            };
            Ok(Node {
                id,
                cpus: row.scalar("cpus", true)?,
                mem: row.scalar("mem", true)?,
                disk: row.scalar("disk", false)?,
                attributes,
            })
        })
        .collect()
}

pub(super) fn parse_tasks(input: &str) -> Result<Vec<Task>, WorkloadError> {
    let table = Table::parse(TASKS, input, &TASK_COLUMNS)?;
    rows(&table)
        .map(|row| {
            let id = row.required("id")?;
            let id = TaskId::new(id).map_err(|e| row.err("id", e.to_string()))?;
            let constraints = match row.get("constraints") {
                Some(v) => parse_constraints(&row, v)?,
                None => Vec::new(),
            };
            Ok(Task {
                id,
                cpus: row.scalar("cpus", true)?,
                mem: row.scalar("mem", true)?,
                disk: row.scalar("disk", false)?,
                arrival: row.seconds("arrival")?.map(Time::from_millis),
                duration: row.seconds("duration")?.map(Duration::from_millis),
                constraints,
            })
        })
        .collect()
}

/// Quotes a field if it needs it.
fn field(s: &str) -> String {
    if s.contains([',', '"']) || s.starts_with(' ') || s.ends_with(' ') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn seconds(ms: u64) -> String {
    // Shortest exact decimal, as for scalars.
    Scalar::from_milli_saturating(ms).to_string()
}

pub(super) fn write_nodes(nodes: &[Node]) -> String {
    let mut out = String::from("id,cpus,mem,disk,attributes\n");
    for n in nodes {
        let attrs: Vec<String> = n
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        out.push_str(&format!(
            "{},{},{},{},{}\n",
            field(n.id.as_str()),
            n.cpus,
            n.mem,
            n.disk,
            field(&attrs.join(";"))
        ));
    }
    out
}

pub(super) fn write_tasks(tasks: &[Task]) -> String {
    let mut out = String::from("id,cpus,mem,disk,arrival,duration,constraints\n");
    for t in tasks {
        let cons: Vec<String> = t
            .constraints
            .iter()
            .map(|c| format!("{}{}{}", c.attribute, c.op.symbol(), c.value))
            .collect();
        out.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            field(t.id.as_str()),
            t.cpus,
            t.mem,
            t.disk,
            t.arrival
                .map(|a| seconds(a.as_millis()))
                .unwrap_or_default(),
            t.duration
                .map(|d| seconds(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
                .unwrap_or_default(),
            field(&cons.join(";"))
        ));
    }
    out
}
