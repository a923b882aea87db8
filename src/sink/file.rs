//! The file sink's writer: JSON lines into hidden in-progress part files, renamed into view when closed.

use std::path::{Path, PathBuf};

use futures_lite::AsyncWriteExt;
use glommio::io::{BufferedFile, StreamWriter, StreamWriterBuilder};

use super::SinkError;
use crate::constants::{FILE_SINK_BUFFER_BYTES, FILE_SINK_PART_BYTES_MAX};
use crate::record::json::JsonEncoder;
use crate::record::{BatchView, Schema};

struct OpenPart {
    writer: StreamWriter,
    hidden: PathBuf,
    visible: PathBuf,
    bytes: u64,
}

pub struct FileSinkWriter {
    dir: PathBuf,
    /// `<writer>-<shard>`: unique per job (or dead-letter source) and shard, so writers never collide.
    prefix: String,
    encoder: JsonEncoder,
    buf: Vec<u8>,
    part: Option<OpenPart>,
    next_seq: u64,
}

impl FileSinkWriter {
    pub fn new(dir: &Path, writer: &str, shard: usize, schema: &Schema) -> FileSinkWriter {
        FileSinkWriter {
            dir: dir.to_path_buf(),
            prefix: format!("{writer}-{shard}"),
            encoder: JsonEncoder::new(schema),
            buf: Vec::with_capacity(FILE_SINK_BUFFER_BYTES),
            part: None,
            next_seq: 0,
        }
    }

    fn error(&self, what: &str, path: &Path, e: impl std::fmt::Display) -> SinkError {
        SinkError { retryable: false, message: format!("file sink: cannot {what} {}: {e}", path.display()) }
    }

    pub async fn write(&mut self, view: &BatchView<'_>) -> Result<(), SinkError> {
        for row in 0..view.n_rows() {
            self.encoder.encode_row(view, row, &mut self.buf);
            if self.buf.len() >= FILE_SINK_BUFFER_BYTES {
                self.write_buffer().await?;
            }
        }
        Ok(())
    }

    async fn write_buffer(&mut self) -> Result<(), SinkError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if self.part.is_none() {
            let name = format!("part-{}-{:06}.json", self.prefix, self.next_seq);
            self.next_seq += 1;
            let visible = self.dir.join(&name);
            let hidden = self.dir.join(format!(".{name}.inprogress"));
            let file = BufferedFile::create(&hidden).await.map_err(|e| self.error("create", &hidden, e))?;
            let writer = StreamWriterBuilder::new(file).with_buffer_size(FILE_SINK_BUFFER_BYTES).build();
            self.part = Some(OpenPart { writer, hidden, visible, bytes: 0 });
        }
        let part = self.part.as_mut().expect("opened above");
        if let Err(e) = part.writer.write_all(&self.buf).await {
            let hidden = part.hidden.clone();
            return Err(self.error("write", &hidden, e));
        }
        part.bytes += self.buf.len() as u64;
        self.buf.clear();
        if part.bytes >= FILE_SINK_PART_BYTES_MAX {
            self.close_part().await?;
        }
        Ok(())
    }

    async fn close_part(&mut self) -> Result<(), SinkError> {
        let Some(mut part) = self.part.take() else { return Ok(()) };
        if let Err(e) = part.writer.close().await {
            return Err(self.error("close", &part.hidden, e));
        }
        glommio::io::rename(&part.hidden, &part.visible).await.map_err(|e| self.error("publish", &part.visible, e))
    }

    pub async fn close(mut self) -> Result<(), SinkError> {
        self.write_buffer().await?;
        self.close_part().await
    }
}
