// Starts Swagger UI on /docs from this file rather than an inline script, so the page's
// Content-Security-Policy can refuse every inline script. Swagger UI reads no configuration
// from the address bar (queryConfigEnabled stays off) and contacts no validator.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: null,
    queryConfigEnabled: false,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
});
