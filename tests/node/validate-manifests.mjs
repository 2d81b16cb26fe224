// Checks every manifest under deploy/kubernetes/ against its kind's schema:
// Kubernetes' own (kubernetes-models) and KEDA's CRDs (@kubernetes-models/keda),
// each a JSON schema generated from the upstream definitions. A kind with no
// schema here is an error, not a pass. Exits 1 on the first file with a fault,
// naming the file, the document and what the schema says.
import { readdirSync, readFileSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { Secret } from "kubernetes-models/v1/Secret";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { ScaledJob } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledJob";
import { TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication";

const models = {
  "apps/v1 Deployment": Deployment,
  "v1 Secret": Secret,
  "keda.sh/v1alpha1 ScaledObject": ScaledObject,
  "keda.sh/v1alpha1 ScaledJob": ScaledJob,
  "keda.sh/v1alpha1 TriggerAuthentication": TriggerAuthentication,
};

const here = dirname(fileURLToPath(import.meta.url));
const dir = process.argv[2] ?? join(here, "..", "..", "deploy", "kubernetes");
const files = readdirSync(dir).filter((f) => f.endsWith(".yaml")).sort();
if (files.length === 0) {
  console.error(`no manifests in ${dir}`);
  process.exit(1);
}
let checked = 0;
for (const file of files) {
  const docs = parseAllDocuments(readFileSync(join(dir, file), "utf8"));
  docs.forEach((doc, i) => {
    const where = `${file} (document ${i + 1})`;
    if (doc.errors.length > 0) {
      console.error(`${where}: not YAML: ${doc.errors[0].message}`);
      process.exit(1);
    }
    const object = doc.toJS();
    const key = `${object?.apiVersion} ${object?.kind}`;
    const Model = models[key];
    if (!Model) {
      console.error(`${where}: no schema here for ${key}`);
      process.exit(1);
    }
    try {
      new Model(object).validate();
    } catch (error) {
      console.error(`${where}: ${key} does not match its schema: ${error.message}`);
      process.exit(1);
    }
    console.log(`ok ${where}: ${key}`);
    checked += 1;
  });
}
console.log(`${checked} manifests match their schemas`);
