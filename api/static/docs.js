"use strict";
// Swagger UI (api/static/swagger-ui/) on this API's own document. A key given to "Authorize"
// stays in this tab's memory: persistAuthorization would keep it in localStorage.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  persistAuthorization: false,
  // No ?url= or ?configUrl= from the address bar: the page shows this document only.
  queryConfigEnabled: false,
  // No badge fetched from validator.swagger.io.
  validatorUrl: null,
  displayRequestDuration: true,
});
