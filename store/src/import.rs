//! `ducktrace import`: loads files written by `ducktrace export` back into a store. The spans go
//! through the same writer as OTLP ingest, so resources and scopes are matched by their OTLP
//! bytes with those already stored, and each span row comes back exactly as it was exported.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use duckdb::arrow::array::{
    Array, ArrayRef, BinaryArray, FixedSizeBinaryArray, MapArray, RecordBatch, StringArray, UInt32Array,
};
use duckdb::arrow::buffer::Buffer;
use duckdb::arrow::datatypes::{Field, Schema};
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use prost::Message;

use crate::batch::{
    self, span_schema, ResourceEntry, ScopeEntry, SpanBatch, KEY_SET_COLUMN, RESOURCE_ID_COLUMN,
    SCOPE_ID_COLUMN,
};
use crate::columns::{KeySet, KeySetColumn};
use crate::ids::TraceId;
use crate::{SpanWriter, WriteError};

/// Spans read and committed together.
const BATCH_SPANS: usize = 8192;

/// Why an import failed; spans of files before the failing one are stored.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a span file written by ducktrace export: {reason}")]
    NotAnExport { path: PathBuf, reason: String },
    #[error("no .parquet files found in {0}")]
    NoFiles(String),
    #[error("storing spans of {path} failed: {source}")]
    Write { path: PathBuf, source: WriteError },
}

/// The `.parquet` files among `paths`, folders searched recursively, in name order (files whose
/// name ends in `.partial`, left by an interrupted export, are not taken).
pub fn parquet_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ImportError> {
    fn walk(path: &Path, found: &mut Vec<PathBuf>) -> Result<(), ImportError> {
        let io_error = |source| ImportError::Io {
            path: path.to_owned(),
            source,
        };
        if !path.is_dir() {
            std::fs::metadata(path).map_err(io_error)?;
            found.push(path.to_owned());
            return Ok(());
        }
        for entry in std::fs::read_dir(path).map_err(io_error)? {
            let entry = entry.map_err(io_error)?.path();
            if entry.is_dir() {
                walk(&entry, found)?;
            } else if entry.extension().is_some_and(|ext| ext == "parquet") {
                found.push(entry);
            }
        }
        Ok(())
    }
    let mut found = Vec::new();
    for path in paths {
        walk(path, &mut found)?;
    }
    found.sort();
    if found.is_empty() {
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(ImportError::NoFiles(names.join(", ")));
    }
    Ok(found)
}

/// One exported file, opened for reading.
pub struct ExportFile {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    /// Spans in the file, from its footer.
    pub spans: u64,
}

impl ExportFile {
    pub fn open(path: &Path) -> Result<Self, ImportError> {
        let file = std::fs::File::open(path).map_err(|source| ImportError::Io {
            path: path.to_owned(),
            source,
        })?;
        let not_an_export = |reason: String| ImportError::NotAnExport {
            path: path.to_owned(),
            reason,
        };
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| not_an_export(e.to_string()))?;
        let spans = builder.metadata().file_metadata().num_rows() as u64;
        let reader = builder
            .with_batch_size(BATCH_SPANS)
            .build()
            .map_err(|e| not_an_export(e.to_string()))?;
        Ok(Self {
            path: path.to_owned(),
            reader,
            spans,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores every span of the file through `writer`, calling `progress` with the number of
    /// spans of each committed batch; returns how many were stored.
    pub async fn import(
        mut self,
        writer: &SpanWriter,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, ImportError> {
        let mut stored = 0;
        while let Some(batch) = self.next_batch()? {
            let spans = batch.len() as u64;
            writer
                .write_ahead_of_indexing(batch)
                .await
                .map_err(|source| ImportError::Write {
                    path: self.path.clone(),
                    source,
                })?;
            stored += spans;
            progress(spans);
        }
        Ok(stored)
    }

    fn next_batch(&mut self) -> Result<Option<SpanBatch>, ImportError> {
        let not_an_export = |reason: String| ImportError::NotAnExport {
            path: self.path.clone(),
            reason,
        };
        match self.reader.next() {
            None => Ok(None),
            Some(Err(error)) => Err(not_an_export(error.to_string())),
            Some(Ok(batch)) => span_batch(&batch).map(Some).map_err(not_an_export),
        }
    }
}

/// Rebuilds the writer's columns from exported ones: the trace id back to its 16 bytes,
/// resources and scopes from their OTLP bytes and attribute maps split into key sets and values,
/// as indexes into the batch's own lists.
fn span_batch(exported: &RecordBatch) -> Result<SpanBatch, String> {
    let column = |name: &str| {
        exported
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| format!("it has no column {name}"))
    };
    let trace_ids = column("trace_id")?;
    let trace_ids = trace_ids
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or("column trace_id is not text")?;
    let mut trace_id_bytes = Vec::with_capacity(16 * trace_ids.len());
    for text in trace_ids.iter() {
        let trace_id: TraceId = text
            .ok_or("a trace_id is NULL")?
            .parse()
            .map_err(|e| format!("{e}"))?;
        trace_id_bytes.extend_from_slice(&trace_id.to_bytes());
    }
    let (resource_ids, resources) = interned(&column("resource_otlp")?, "resource_otlp", |fingerprint| {
        let (resource, schema_url) = decode::<Resource>(fingerprint)?;
        Ok(ResourceEntry {
            fingerprint: fingerprint.to_vec(),
            service_name: batch::service_name(&resource),
            resource,
            schema_url,
        })
    })?;
    let (scope_ids, scopes) = interned(&column("scope_otlp")?, "scope_otlp", |fingerprint| {
        let (scope, schema_url) = decode::<InstrumentationScope>(fingerprint)?;
        Ok(ScopeEntry {
            fingerprint: fingerprint.to_vec(),
            scope,
            schema_url,
        })
    })?;

    let (attribute_columns, key_sets) = key_set_columns(&column("attributes")?, &column("attribute_types")?)?;

    let target = span_schema();
    let mut fields = Vec::with_capacity(target.fields().len());
    let mut columns = Vec::with_capacity(target.fields().len());
    for (i, field) in target.fields().iter().enumerate() {
        let array: ArrayRef = match i {
            0 => Arc::new(FixedSizeBinaryArray::new(
                16,
                Buffer::from_vec(trace_id_bytes.clone()),
                None,
            )),
            RESOURCE_ID_COLUMN => Arc::new(UInt32Array::from(resource_ids.clone())),
            SCOPE_ID_COLUMN => Arc::new(UInt32Array::from(scope_ids.clone())),
            i if (KEY_SET_COLUMN..KEY_SET_COLUMN + attribute_columns.len()).contains(&i) => {
                attribute_columns[i - KEY_SET_COLUMN].clone()
            }
            _ => column(field.name())?,
        };
        // Nested columns keep the field names the file was written with; DuckDB matches by
        // position, so only the types must agree.
        fields.push(
            Field::new(field.name(), array.data_type().clone(), field.is_nullable())
                .with_metadata(field.metadata().clone()),
        );
        columns.push(array);
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())?;
    Ok(SpanBatch::from_columns(batch, resources, scopes, key_sets))
}

/// The span attribute columns (key set, values, type letters) of exported attribute maps.
fn key_set_columns(attributes: &ArrayRef, types: &ArrayRef) -> Result<([ArrayRef; 5], Vec<KeySet>), String> {
    let maps = attributes
        .as_any()
        .downcast_ref::<MapArray>()
        .ok_or("column attributes is not a map")?;
    let types = types
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or("column attribute_types is not text")?;
    let keys = maps
        .keys()
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or("attribute keys are not text")?;
    let values = maps
        .values()
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or("attribute values are not text")?;
    let mut column = KeySetColumn::default();
    for (row, entries) in maps.value_offsets().windows(2).enumerate() {
        let entries = entries[0] as usize..entries[1] as usize;
        let letters = types.value(row).as_bytes();
        if letters.len() != entries.len() {
            return Err(format!(
                "row {row} has {} attributes but {} type letters",
                entries.len(),
                letters.len()
            ));
        }
        for (entry, &letter) in entries.zip(letters) {
            let value = values.is_valid(entry).then(|| values.value(entry));
            column.push_entry(keys.value(entry), letter, value);
        }
        column.end_row();
    }
    Ok(column.finish())
}

/// Batch-local indexes for the values of a binary column, and the entry of each distinct value.
fn interned<T>(
    array: &ArrayRef,
    name: &str,
    mut entry: impl FnMut(&[u8]) -> Result<T, String>,
) -> Result<(Vec<u32>, Vec<T>), String> {
    let values = array
        .as_any()
        .downcast_ref::<BinaryArray>()
        .ok_or_else(|| format!("column {name} is not binary"))?;
    let mut index: HashMap<&[u8], u32> = HashMap::new();
    let mut entries = Vec::new();
    let mut ids = Vec::with_capacity(values.len());
    for value in values.iter() {
        let value = value.ok_or_else(|| format!("a {name} is NULL"))?;
        let id = match index.get(value) {
            Some(&id) => id,
            None => {
                let id = entries.len() as u32;
                entries.push(entry(value)?);
                index.insert(value, id);
                id
            }
        };
        ids.push(id);
    }
    Ok((ids, entries))
}

/// A resource or scope from its stored bytes: the message, then its schema URL.
fn decode<M: Message + Default>(fingerprint: &[u8]) -> Result<(M, String), String> {
    let mut rest = fingerprint;
    let message = M::decode_length_delimited(&mut rest).map_err(|e| format!("bad OTLP bytes: {e}"))?;
    let schema_url = String::from_utf8(rest.to_vec()).map_err(|e| format!("bad schema URL: {e}"))?;
    Ok((message, schema_url))
}
