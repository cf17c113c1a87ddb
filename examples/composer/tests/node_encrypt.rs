//! A StorageClass may spell `encrypt` any way the parameter parser takes a
//! boolean (`TRUE`, ` True `): the controller then records the volume as
//! encrypted (its volume context says `encrypt=true`), and the node side
//! must encrypt it too. Before, the node compared the raw value with
//! `"true"` and staged such a volume in plaintext, without even asking for
//! the passphrase. Now the stage without the node-stage secret is
//! `INVALID_ARGUMENT` naming it, and with it the engine volume is
//! encrypted.
//!
//! Needs root, `/dev/fuse` and loop devices: without them the test says so
//! and passes, except under `CI=true`, where it fails.

use csi_types::{ids::*, node::*, prelude::*, redact::*, types::*};

mod common;
use common::{InProcess, Vol, cap, np};

async fn stage(s: &InProcess, v: &Vol, secrets: Secrets) -> Result<(), CsiError> {
    Csi::node_stage_volume(
        &s.plugin,
        NodeStageVolumeRequest {
            volume_id: VolumeId::new(&v.id).unwrap(),
            publish_context: Map::new(),
            staging_target_path: np(&v.staging),
            volume_capability: cap(),
            secrets,
            volume_context: Map::new(),
        },
    )
    .await
    .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypt_spelled_in_capitals_is_encrypted_on_the_node() {
    if !common::can_mount() {
        return;
    }
    let s = InProcess::new();
    for (name, spelling) in [("caps", "TRUE"), ("spaced", " True ")] {
        let params = [
            ("type", "slice"),
            ("redundancy", "true"),
            ("encrypt", spelling),
        ];
        let mut req = composer::create_request(name, &params, 32 << 20).unwrap();
        req.volume_capabilities = vec![cap()];
        let vol = Csi::create_volume(&s.plugin, req).await.unwrap().volume;
        assert_eq!(
            vol.volume_context.get("encrypt").map(String::as_str),
            Some("true"),
            "{name}: {vol:?}"
        );
        let id = vol.volume_id.as_str().to_string();
        common::controller_publish(&s.plugin, &id).await;
        let v = Vol {
            id: id.clone(),
            staging: s.dir.path().join("staging").join(name),
            target: s.dir.path().join("target").join(name),
        };

        let e = stage(&s, &v, Secrets::default()).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{name}: {e}");
        assert!(
            e.to_string().contains(composer::node::ENCRYPTION_SECRET),
            "{name}: {e}"
        );
        assert!(
            s.driver.node_side().unwrap().staged_at(&id).is_none(),
            "{name}: staged in plaintext"
        );

        let secrets = Secrets::new(
            [(
                composer::node::ENCRYPTION_SECRET.to_string(),
                "correct horse battery staple".to_string(),
            )]
            .into(),
        )
        .unwrap();
        stage(&s, &v, secrets).await.unwrap();
        let engine = s.driver.node_side().unwrap().volume(&id).unwrap();
        assert!(engine.is_encrypted(), "{name}: staged in plaintext");
        Csi::node_unstage_volume(
            &s.plugin,
            NodeUnstageVolumeRequest {
                volume_id: VolumeId::new(&id).unwrap(),
                staging_target_path: np(&v.staging),
            },
        )
        .await
        .unwrap();
    }
}
