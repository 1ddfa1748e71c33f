import type { NextConfig } from "next";

// Static export: `npm run build` writes plain files to out/, which `agentflow serve`
// serves at `/` next to the API. No Next server runs in production.
const nextConfig: NextConfig = {
  output: "export",
  trailingSlash: true,
  images: { unoptimized: true },
  reactStrictMode: true,
};

export default nextConfig;
