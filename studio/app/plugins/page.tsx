import type { Metadata } from "next";
import { PluginsPage } from "@/components/PluginsPage";

export const metadata: Metadata = { title: "Plugins · AgentFlow Studio" };

/** `/plugins/` (a static page of the export): installed node plugins, their types and load errors. */
export default function Plugins() {
  return <PluginsPage />;
}
