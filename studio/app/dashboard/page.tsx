import type { Metadata } from "next";
import { Dashboard } from "@/components/Dashboard";

export const metadata: Metadata = { title: "Dashboard · AgentFlow Studio" };

/** `/dashboard/` (a static page of the export): runs, tokens, cost and latency over time. */
export default function DashboardPage() {
  return <Dashboard />;
}
