// Builds the dashboard into the Python package (src/tallygate/dashboard/static), served at /dashboard/.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/dashboard/",
  build: {
    outDir: "../src/tallygate/dashboard/static",
    emptyOutDir: true,
    assetsInlineLimit: 0, // no data: URLs beyond what the CSP allows for images
    chunkSizeWarningLimit: 400,
  },
});
