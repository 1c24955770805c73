//! Requests and answers larger than one frame (64 MiB): a request is refused clearly, before it is
//! sent; an answer travels in parts and arrives whole.

use crate::support::*;

fn blob(name: &str, data: &str) -> String {
    format!("apiVersion: big.example.org/v1\nkind: Blob\nmetadata:\n  name: {name}\nspec:\n  data: {data}\n")
}

/// `len` bytes that differ from one object to the next.
fn data_of(name: &str, len: usize) -> String {
    let mut data = format!("{name}-");
    let fill = char::from(b'a' + (name.len() + name.bytes().map(usize::from).sum::<usize>()) as u8 % 26);
    data.extend(std::iter::repeat_n(fill, len - data.len()));
    data
}

fn assert_exit(run: &Run, code: i32) {
    // Not `ok()`: its message would print every megabyte of stdout.
    assert_eq!(run.code, code, "stderr: {}\nstdout: {} bytes", run.stderr, run.stdout.len());
}

#[test]
fn a_list_beyond_one_frame_arrives_whole_and_an_apply_beyond_one_frame_is_refused_clearly() {
    const BLOBS: usize = 36;
    const DATA: usize = 2 << 20;
    let p = TestProject::new("network");
    p.write("crds/big.example.org_blobs.yaml", &crd("big.example.org", "v1", "Blob", "data", "string"));
    for i in 0..BLOBS {
        let name = format!("blob-{i:02}");
        p.write(&format!("in/{name}.yaml"), &blob(&name, &data_of(&name, DATA)));
    }
    let files_before = p.in_files();
    let _s = p.start();

    // 72 MiB of objects: more than a frame may carry, so the answer comes in parts.
    let run = p.cli(&["get", "blobs", "-o", "json"]);
    assert_exit(&run, 0);
    assert!(run.stdout.len() > 64 << 20, "{} bytes", run.stdout.len());
    let list = run.json();
    drop(run);
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), BLOBS);
    for (i, item) in items.iter().enumerate() {
        let name = format!("blob-{i:02}");
        assert_eq!(item["metadata"]["name"], name.as_str());
        assert!(item["spec"]["data"].as_str() == Some(data_of(&name, DATA).as_str()), "{name} came back different");
    }
    drop(list);

    // A 70 MiB object cannot be sent in one frame: refused before sending, exit 1, no hint to
    // start the server that is running.
    let big = p.tmp.path().join("big.yaml");
    std::fs::write(&big, blob("huge", &data_of("huge", 70 << 20))).unwrap();
    let run = p.cli(&["apply", "-f", big.to_str().unwrap()]);
    assert_exit(&run, 1);
    assert!(
        run.stderr.contains(
            "Error: the request is 70.0 MiB, over the 64 MiB frame limit; apply the files in smaller batches"
        ),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("cannot reach") && !run.stderr.contains("Hint"), "{}", run.stderr);

    // The server is unharmed and nothing was written.
    p.cli(&["server", "get"]).ok();
    let missing = p.cli(&["get", "blobs", "huge"]);
    assert_exit(&missing, 1);
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);
    assert_eq!(p.in_files(), files_before);
}
