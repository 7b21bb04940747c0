//! One integration test binary (faster to link): every test drives the real
//! `snap` binary against real directories, SQLite files and pack files.

mod common;

mod cli;
mod commands;
mod config;
mod copy;
mod crash;
mod damage;
mod dbdiff;
mod dedup;
mod deltas;
mod encryption;
mod faultproxy;
mod format;
mod frozen;
mod gc;
mod guard;
mod hostile;
mod layers;
mod library;
mod model;
mod newuser;
mod readme;
mod repair;
mod restore_in_place;
mod restore_safety;
mod roundtrip;
mod s3;
mod s3_faults;
mod s3s_fs_binary;
mod s3server;
mod sqlite;
mod storage;
mod trust;
mod ui;
mod xattrs;
