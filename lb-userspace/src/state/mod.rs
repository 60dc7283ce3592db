//! The desired state and the maps that hold it: the model both producers
//! build (`model`), how updates reach the agent (`desired`), the only writer
//! of the maps (`writer`), the Maglev tables (`maglev`) and what readers
//! make of the maps (`reader`).
pub mod desired;
pub mod maglev;
pub mod model;
pub mod reader;
pub mod writer;
