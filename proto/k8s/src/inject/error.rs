//! Why a pod template that asks for the agent cannot get it.

use super::{ANNOTATION_CONTAINER, ANNOTATION_INJECTED, ANNOTATION_ROOT, ANNOTATION_WAIT_FOR_SYNC};

/// Why a pod template that asks for the agent cannot get it. The object is left untouched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// An lks annotation is not a string (YAML `true` instead of `"true"`).
    #[error(
        "{object}: annotation {key} must be a string, not {value} (quote it in YAML: {key}: \"{value}\")"
    )]
    AnnotationNotString {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The annotation.
        key: &'static str,
        /// Its value, as JSON.
        value: String,
    },
    /// A field of the pod template does not have the shape Kubernetes requires.
    #[error("{object}: {path} must be {expected}")]
    Malformed {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The field, e.g. `spec.template.spec.containers[0].env`.
        path: String,
        /// What it must be.
        expected: &'static str,
    },
    /// The pod template has no containers.
    #[error("{object}: the pod template has no containers to run the agent in")]
    NoContainers {
        /// The object, as `Kind namespace/name`.
        object: String,
    },
    /// [`ANNOTATION_CONTAINER`] names a container that does not exist.
    #[error(
        "{object}: annotation {ANNOTATION_CONTAINER} names the container {name:?}, which does not \
         exist; the containers are: {existing}"
    )]
    UnknownContainer {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The name in the annotation.
        name: String,
        /// The containers that exist, comma-separated.
        existing: String,
    },
    /// [`ANNOTATION_ROOT`] is not an absolute path.
    #[error("{object}: annotation {ANNOTATION_ROOT} must be an absolute path, not {root:?}")]
    BadRoot {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The annotation's value.
        root: String,
    },
    /// [`ANNOTATION_WAIT_FOR_SYNC`] is not a whole number of seconds.
    #[error(
        "{object}: annotation {ANNOTATION_WAIT_FOR_SYNC} must be a whole number of seconds (at most 3600), not {value:?}"
    )]
    BadWaitForSync {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The annotation's value.
        value: String,
    },
    /// The container has no `command` and no image to learn its entrypoint from.
    #[error("{object}: container {container:?} has neither `command` nor `image`")]
    NoImage {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The container.
        container: String,
    },
    /// The container has no `command` and its image's ENTRYPOINT and CMD are unknown.
    #[error(
        "{object}: container {container:?} has no `command`, and the ENTRYPOINT and CMD of its \
         image {image} could not be read: set `command` on the container (the full argv, \
         entrypoint included) or make the image readable"
    )]
    UnknownCommand {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The container.
        container: String,
        /// Its image.
        image: String,
    },
    /// Neither the container nor its image says what to run.
    #[error(
        "{object}: container {container:?} runs nothing: it has no `command` nor `args`, and its \
         image {image} has neither ENTRYPOINT nor CMD"
    )]
    NothingToRun {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The container.
        container: String,
        /// Its image.
        image: String,
    },
    /// Something the injection adds is already there, without [`ANNOTATION_INJECTED`].
    #[error(
        "{object}: {what} already exists but the pod template is not annotated \
         {ANNOTATION_INJECTED}; lks reserves it: rename or remove it"
    )]
    Conflict {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// What is in the way, e.g. `volume "lks-agent"`.
        what: String,
    },
}
