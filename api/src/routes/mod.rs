pub mod health;
pub mod images;
pub mod items;
pub mod jobs;
pub mod status;
