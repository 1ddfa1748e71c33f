import { Studio } from "@/components/Studio";

/** The single page of Studio (a static export): the designer. `?workflow=<id>` opens a saved workflow. */
export default function Page() {
  return <Studio />;
}
