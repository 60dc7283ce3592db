//! The desired state and the maps that hold it: the model both producers
//! build (`model`), how updates reach the agent (`desired`), the only writer
//! of the maps (`writer`), the Maglev tables (`maglev`) and what readers
//! make of the maps (`reader`).
pub mod desired;
pub mod maglev;
#[expect(missing_docs, reason = "being restructured (issue 11 items 1-2); documented there")]
pub mod model;
pub mod reader;
#[expect(missing_docs, reason = "being restructured (issue 11 items 1-2); documented there")]
pub mod writer;
