"use strict";
// Renders /openapi.json with no build step and nothing fetched from elsewhere.
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
};

function resolve(schema, components, depth = 0) {
  if (!schema || depth > 6) return schema;
  if (schema.$ref) return resolve(components[schema.$ref.split("/").pop()], components, depth + 1);
  const out = Array.isArray(schema) ? [] : {};
  for (const [key, value] of Object.entries(schema)) {
    out[key] = value && typeof value === "object" ? resolve(value, components, depth + 1) : value;
  }
  return out;
}

function schemaBlock(label, schema, components) {
  const name = schema && schema.$ref ? schema.$ref.split("/").pop() : "";
  return el("details", {}, el("summary", {}, `${label}${name ? " — " + name : ""}`),
            el("pre", {}, JSON.stringify(resolve(schema, components), null, 2)));
}

function operation(path, method, op, components) {
  const secured = !(Array.isArray(op.security) && op.security.length === 0);
  const head = el("summary", {},
    el("span", { class: `method ${method}` }, method.toUpperCase()),
    el("span", { class: "path" }, path),
    el("span", { class: "summary" }, op.summary || ""),
    el("span", { class: "lock" }, secured ? "needs a key" : "open"));
  const body = el("div", { class: "body" });
  if (op.parameters && op.parameters.length) {
    const rows = op.parameters.map(p => el("tr", {},
      el("td", {}, el("code", {}, p.name)), el("td", {}, p.in), el("td", {}, p.required ? "required" : ""),
      el("td", {}, p.description || (p.schema && (p.schema.description || p.schema.type || (p.schema.anyOf ? "see schema" : ""))) || "")));
    body.append(el("table", {}, el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"), el("th", {}, ""), el("th", {}, "")), ...rows));
  }
  if (op.requestBody) {
    body.append(schemaBlock("Request body", op.requestBody.content["application/json"].schema, components));
  }
  const rows = Object.entries(op.responses).map(([status, response]) => {
    const content = response.content || {};
    const types = Object.keys(content).join(", ");
    const json = content["application/json"];
    const cell = el("td", {}, response.description + (types ? ` (${types})` : ""));
    if (json && json.schema) cell.append(schemaBlock("schema", json.schema, components));
    if (json && json.example) cell.append(el("pre", {}, JSON.stringify(json.example)));
    return el("tr", {}, el("td", { class: `status ${status < 400 ? "ok" : "err"}` }, status), cell);
  });
  body.append(el("table", {}, el("tr", {}, el("th", {}, "answer"), el("th", {}, "")), ...rows));
  return el("details", { class: "op", id: op.operationId }, head, body);
}

fetch("/openapi.json").then(r => r.json()).then(doc => {
  document.getElementById("title").textContent = `${doc.info.title} API ${doc.info.version}`;
  document.getElementById("description").textContent = doc.info.description;
  const main = document.getElementById("main");
  const components = doc.components.schemas;
  for (const tag of doc.tags.map(t => t.name)) {
    main.append(el("h2", {}, tag));
    for (const [path, methods] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(methods)) {
        if (op.tags.includes(tag)) main.append(operation(path, method, op, components));
      }
    }
  }
}).catch(error => { document.getElementById("error").textContent = "Could not load /openapi.json: " + error; });
