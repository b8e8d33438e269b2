//! Logging in runc's formats: JSON lines `{"level","msg","time"}` (containerd reads the last
//! one's `msg` when a command fails) or logrus-style text, to `--log` or stderr.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::Layer;

use crate::LogFormat;

type Sink = Arc<Mutex<Box<dyn Write + Send>>>;

pub struct Logger {
    to_file: bool,
}

impl Logger {
    /// Logs the error that ends the command, and also prints it on stderr when logs go to a file.
    pub fn fatal(&self, msg: &str) {
        tracing::error!("{msg}");
        if self.to_file {
            eprintln!("lodge-runc: {msg}");
        }
    }
}

struct RuncLayer {
    sink: Sink,
    json: bool,
    max: Level,
}

#[derive(Default)]
struct Fields {
    msg: String,
    extra: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.msg, "{value:?}");
        } else {
            self.extra
                .push((field.name().to_string(), format!("{value:?}")));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg.push_str(value);
        } else {
            self.extra
                .push((field.name().to_string(), value.to_string()));
        }
    }
}

impl<S: Subscriber> Layer<S> for RuncLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: LayerContext<'_, S>) {
        let level = *event.metadata().level();
        if level > self.max {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let level = level.as_str().to_ascii_lowercase();
        let time = lodge_runtime::timefmt::now();
        let line = if self.json {
            let mut obj = serde_json::Map::new();
            obj.insert("level".into(), level.into());
            obj.insert("msg".into(), f.msg.into());
            obj.insert("time".into(), time.into());
            for (k, v) in f.extra {
                obj.insert(k, v.into());
            }
            serde_json::Value::Object(obj).to_string()
        } else {
            let mut s = format!("time={time:?} level={level} msg={:?}", f.msg);
            for (k, v) in f.extra {
                let _ = write!(s, " {k}={v:?}");
            }
            s
        };
        if let Ok(mut w) = self.sink.lock() {
            let _ = writeln!(w, "{line}");
        }
    }
}

pub fn init(log: Option<&Path>, format: LogFormat, debug: bool) -> Result<Logger> {
    let sink: Box<dyn Write + Send> = match log {
        Some(p) => Box::new(
            File::options()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening log file {}", p.display()))?,
        ),
        None => Box::new(std::io::stderr()),
    };
    let layer = RuncLayer {
        sink: Arc::new(Mutex::new(sink)),
        json: matches!(format, LogFormat::Json),
        max: if debug { Level::DEBUG } else { Level::WARN },
    };
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::set_global_default(subscriber).context("installing the logger")?;
    Ok(Logger {
        to_file: log.is_some(),
    })
}
