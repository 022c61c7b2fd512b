"use strict";

// The browsable API reference: Swagger UI (served from the swagger-ui-bundle package) over /api/openapi.json.
window.addEventListener("load", () => {
  window.SwaggerUIBundle({ url: "/api/openapi.json", dom_id: "#swagger-ui", deepLinking: true });
});
