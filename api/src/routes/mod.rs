pub mod catalogue;
pub mod health;
pub mod images;
pub mod items;
pub mod jobs;
pub mod search;
pub mod status;
pub mod web;
