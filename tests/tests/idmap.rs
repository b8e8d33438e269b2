//! ID-mapped bind mounts: `idmap` with the container's mappings, explicit mount mappings,
//! `ridmap`, with and without a user namespace, and the failure paths.

use std::os::unix::fs::MetadataExt;

use lodge_tests::{unique_id, Bundle, Runtime, WORK};
use serde_json::json;

fn host_dir(owner: u32) -> std::path::PathBuf {
    let dir = std::path::Path::new(WORK).join(unique_id("idm"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f"), "data\n").unwrap();
    std::os::unix::fs::chown(dir.join("f"), Some(owner), Some(owner)).unwrap();
    std::os::unix::fs::chown(&dir, Some(owner), Some(owner)).unwrap();
    dir
}

#[test]
fn idmap_with_the_containers_user_namespace() {
    let rt = Runtime::new();
    // Owned by host root: without an ID mapping the container's root would see nobody.
    let dir = host_dir(0);
    let mut bundle = Bundle::new(&[
        "sh",
        "-c",
        "stat -c '%u %g' /data/f; touch /data/new && stat -c '%u' /data/new",
    ]);
    std::fs::create_dir_all(bundle.rootfs().join("data")).unwrap();
    bundle.with_userns(400000);
    let src = dir.to_str().unwrap().to_string();
    bundle.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({"destination": "/data", "type": "bind", "source": src, "options": ["bind", "idmap"]}));
    });
    let (code, out, err) = rt.run_clean(&bundle);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out, "0 0\n0\n",
        "root-owned files are the container root's, and so are new ones"
    );
    assert_eq!(
        std::fs::metadata(dir.join("new")).unwrap().uid(),
        0,
        "written back as host root on disk"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn explicit_mount_mappings_without_a_user_namespace() {
    let rt = Runtime::new();
    let dir = host_dir(1000);
    let mut bundle = Bundle::new(&["sh", "-c", "stat -c '%u %g' /data/f /plain/f"]);
    std::fs::create_dir_all(bundle.rootfs().join("data")).unwrap();
    std::fs::create_dir_all(bundle.rootfs().join("plain")).unwrap();
    let src = dir.to_str().unwrap().to_string();
    bundle.edit(|c| {
        let map = json!([{"containerID": 1000, "hostID": 2000, "size": 1}]);
        let mounts = c["mounts"].as_array_mut().unwrap();
        mounts.push(json!({"destination": "/data", "type": "bind", "source": src, "options": ["rbind", "ridmap"], "uidMappings": map, "gidMappings": map}));
        mounts.push(json!({"destination": "/plain", "type": "bind", "source": src, "options": ["rbind"]}));
    });
    let (code, out, err) = rt.run_clean(&bundle);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out, "2000 2000\n1000 1000\n",
        "on-disk 1000 shows as 2000 through the mapping only"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn idmap_failures() {
    let rt = Runtime::new();
    let dir = host_dir(0);
    let src = dir.to_str().unwrap().to_string();
    for (mount, expect) in [
        (
            json!({"destination": "/data", "type": "bind", "source": src, "options": ["bind", "idmap"]}),
            "needs uidMappings",
        ),
        (
            json!({"destination": "/data", "type": "tmpfs", "source": "tmpfs", "options": ["idmap"]}),
            "only bind mounts",
        ),
        (
            json!({"destination": "/data", "type": "bind", "source": "/no/such/dir", "options": ["bind", "idmap"],
                "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}], "gidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]}),
            "/no/such/dir",
        ),
    ] {
        let mut bundle = Bundle::new(&["true"]);
        bundle.edit(|c| c["mounts"].as_array_mut().unwrap().push(mount.clone()));
        let id = unique_id("idmbad");
        let err = rt.fails(&["create", "--bundle", bundle.path(), &id]);
        assert!(err.contains(expect), "{mount}: {err}");
        rt.assert_no_residue(&id, &bundle);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn idmapped_rootfs_by_annotation() {
    // The rootfs is owned by host root, yet the container's root (host 500000) owns it inside
    // and can write to it, with no chown of the image.
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&[
        "sh",
        "-c",
        "stat -c '%u' /bin/busybox; touch /made-inside && echo wrote",
    ]);
    bundle.with_userns(500000);
    bundle.edit(|c| {
        c["root"]["readonly"] = false.into();
        c["annotations"] = json!({"org.lodge.rootfs.idmap": "true"});
    });
    let (code, out, err) = rt.run_clean(&bundle);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "0\nwrote\n");
    let md = std::fs::metadata(bundle.rootfs().join("made-inside")).unwrap();
    assert_eq!(
        md.uid(),
        0,
        "written through the mapping: host root on disk"
    );

    // Without the annotation, the same rootfs is not the container root's.
    bundle.edit(|c| c["annotations"] = json!({}));
    let (_, out, _) = rt.run_clean(&bundle);
    assert_eq!(
        out, "65534\n",
        "unmapped owner, and no write to the root: {out}"
    );
}
