//! `IotCentralJsonPathContent`: Azure IoT Central data exports. The device id and timestamp come
//! from the export's `deviceId` and `enqueuedTime`, read relative to the matched export object.

use iomt_model::spanned::Node;

use super::{ContentTemplate, Loader, TemplateType, iot_hub::load_fixed};

pub(crate) const TYPE: TemplateType = TemplateType {
    name: "IotCentralJsonPathContent",
    canonical: "IotCentralJsonPathContent",
    load,
};

fn load(loader: &mut Loader<'_>, node: &Node) -> Option<ContentTemplate> {
    load_fixed(
        loader,
        node,
        TYPE.canonical,
        &["$.deviceId"],
        &["$.enqueuedTime"],
    )
}
